-- Queries the relay runs beside its replication connection: preflight checks,
-- slot creation and inspection, heartbeats. Streaming itself uses the
-- replication protocol (pglogrepl), the one place outside sqlc.

-- name: RelayWALLevel :one
-- The server's wal_level; the relay needs 'logical'.
SELECT current_setting('wal_level')::text AS wal_level;

-- name: RelayPublicationExists :one
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = @name::text) AS exists;

-- name: RelaySlot :one
-- The slot's state; lag figures are 0 when the slot has no position yet.
SELECT
    s.plugin::text AS plugin,
    s.database::text AS database,
    coalesce(s.active, false)::bool AS active,
    coalesce(s.wal_status, '')::text AS wal_status,
    coalesce(s.confirmed_flush_lsn::text, '')::text AS confirmed_flush_lsn,
    coalesce((pg_catalog.pg_current_wal_lsn() - s.restart_lsn)::bigint, 0)::bigint AS retained_bytes,
    coalesce((pg_catalog.pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint, 0)::bigint AS confirmed_lag_bytes
FROM pg_catalog.pg_replication_slots s
WHERE s.slot_name = @slot_name::text;

-- name: RelayCreateSlot :one
SELECT lsn::text AS lsn FROM pg_catalog.pg_create_logical_replication_slot(@slot_name::text, 'pgoutput');

-- name: RelayHeartbeat :one
-- A non-transactional logical message: it reaches the relay even when no
-- outbox row is written, so the relay can confirm past it and release WAL.
SELECT pg_catalog.pg_logical_emit_message(false, @prefix::text, ''::text)::text AS lsn;
