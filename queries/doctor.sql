-- Read-only checks `outbox doctor` runs before a relay is deployed.

-- name: DoctorServer :one
SELECT
    current_setting('server_version_num')::int AS version_num,
    current_setting('server_version')::text AS version,
    current_setting('wal_level')::text AS wal_level,
    current_setting('max_replication_slots')::int AS max_replication_slots,
    current_setting('max_wal_senders')::int AS max_wal_senders,
    (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int AS slots_used,
    (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int AS senders_used,
    current_user::text AS role_name,
    (SELECT r.rolreplication OR r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)::boolean AS can_replicate,
    (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)::boolean AS is_superuser,
    current_database()::text AS database_name;

-- name: DoctorPublication :one
SELECT
    p.pubinsert::boolean AS publishes_insert,
    p.pubviaroot::boolean AS via_root,
    EXISTS (
        SELECT 1 FROM pg_catalog.pg_publication_tables t
        WHERE t.pubname = p.pubname AND t.schemaname = @schema::text AND t.tablename = 'events'
    )::boolean AS has_events
FROM pg_catalog.pg_publication p
WHERE p.pubname = @name::text;

-- name: DoctorSlots :many
SELECT
    s.slot_name::text AS slot_name,
    s.plugin::text AS plugin,
    coalesce(s.active, false)::boolean AS active,
    coalesce(s.wal_status, '')::text AS wal_status,
    coalesce((pg_catalog.pg_current_wal_lsn() - s.restart_lsn)::bigint, 0)::bigint AS retained_bytes,
    coalesce(s.confirmed_flush_lsn::text, '')::text AS confirmed_flush_lsn
FROM pg_catalog.pg_replication_slots s
WHERE s.database = current_database()
ORDER BY s.slot_name;

-- The server's system identifier, which the relay's checkpoint records
-- (IDENTIFY_SYSTEM): another one means a restore or another cluster. Managed
-- services may restrict pg_control_system() to superusers and pg_monitor.
-- name: DoctorSystemID :one
SELECT system_identifier::text AS system_id FROM pg_catalog.pg_control_system();

-- The timeline WAL is written on now, as IDENTIFY_SYSTEM reports it: the
-- first 8 hex digits of the current WAL file's name. (pg_control_checkpoint()
-- lags after a promotion until the next checkpoint completes.)
-- name: DoctorTimeline :one
SELECT ('x' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline;

-- name: DoctorSchemaPrivileges :one
SELECT
    has_schema_privilege(@schema::text, 'USAGE')::boolean AS usage,
    has_table_privilege(@schema::text || '.events', 'INSERT')::boolean AS insert_events;
