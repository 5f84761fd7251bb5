-- The on-call console's queries (internal/console). Every one of them only
-- reads: the console writes nothing to Postgres. Tables are named after
-- /* TEMPLATE: schema */, which the runtime replaces with the configured
-- schema (see sql/schema.go); the catalog views need no schema.

-- name: ConsoleSlots :many
-- The database's replication slots with the walsender that holds each (the
-- active relay) and how far behind the server's WAL the slot's confirmed
-- position is.
SELECT
    s.slot_name::text AS slot_name,
    s.plugin::text AS plugin,
    coalesce(s.active, false)::boolean AS active,
    coalesce(s.active_pid, 0)::int AS active_pid,
    coalesce(r.application_name, '')::text AS application_name,
    coalesce(r.client_addr::text, '')::text AS client_addr,
    coalesce(s.wal_status, '')::text AS wal_status,
    coalesce((pg_catalog.pg_current_wal_lsn() - s.restart_lsn)::bigint, 0)::bigint AS retained_bytes,
    coalesce(s.confirmed_flush_lsn::text, '')::text AS confirmed_flush_lsn,
    coalesce((pg_catalog.pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint, 0)::bigint AS confirmed_lag_bytes,
    pg_catalog.pg_current_wal_lsn()::text AS current_lsn
FROM pg_catalog.pg_replication_slots s
LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
WHERE s.database = current_database()
ORDER BY s.slot_name;

-- name: ConsoleJourneyEvents :many
-- The outbox rows of an order: by event id, aggregate id, or correlation or
-- causation id. xmin is the writing transaction's id, which the relay's
-- records carry as pg_xid. The header lookups scan the table: fine for the
-- retention of an outbox, and the page says so when slow.
SELECT e.event_id, e.aggregate_type, e.aggregate_id, e.event_type, e.topic, e.fanout_topics,
    e.kind, e.content_type, octet_length(e.payload)::int AS payload_bytes, e.headers, e.occurred_at, e.created_at,
    e.xmin::text::bigint AS xid
FROM /* TEMPLATE: schema */events e
WHERE e.event_id = sqlc.narg('event_id')::uuid
   OR e.aggregate_id = @q::text
   OR e.headers->>'correlation_id' = @q::text
   OR e.headers->>'causation_id' = @q::text
ORDER BY e.created_at, e.event_id
LIMIT 200;

-- name: ConsoleLedgerRows :many
-- Every endpoint's ledger row of the given events.
SELECT endpoint, event_id, status, attempts, last_status_code, last_error, provider_ref,
    topic, kafka_partition, kafka_offset, next_attempt_at, replays, created_at, updated_at
FROM /* TEMPLATE: schema */sink_ledger
WHERE event_id = ANY(@event_ids::uuid[])
ORDER BY created_at, endpoint;

-- name: ConsoleAttempts :many
-- Every recorded call (and status lookup) of the given events.
SELECT endpoint, event_id, n, outcome, status_code, body_digest, body_head, error, latency_ms,
    started_at, finished_at
FROM /* TEMPLATE: schema */sink_attempts
WHERE event_id = ANY(@event_ids::uuid[])
ORDER BY started_at, n;
