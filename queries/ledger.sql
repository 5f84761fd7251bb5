-- The sink's ledger (migrations/00002_ledger.sql). Every query names its tables
-- after /* TEMPLATE: schema */, which the runtime replaces with the configured
-- schema (see sql/schema.go).

-- name: LedgerTakeOwnerLock :one
-- Held on a dedicated session for the sink instance's lifetime: while it is
-- held, rows the instance left in_flight belong to a live process.
SELECT pg_try_advisory_lock(@lock_space::int4, @owner::int4) AS locked;

-- name: LedgerLock :one
-- The first statement of a claim transaction: inserts the row as pending, or
-- locks the existing one, and says whether an in_flight row's owner is gone
-- (its session advisory lock is free, so the shared probe succeeds).
INSERT INTO /* TEMPLATE: schema */sink_ledger AS l
    (endpoint, event_id, idempotency_key, topic, kafka_partition, kafka_offset, created_at, updated_at)
VALUES (@endpoint, @event_id, @idempotency_key, @topic, @kafka_partition, @kafka_offset,
        coalesce(sqlc.narg('now')::timestamptz, now()), coalesce(sqlc.narg('now')::timestamptz, now()))
ON CONFLICT (endpoint, event_id) DO UPDATE SET endpoint = EXCLUDED.endpoint
RETURNING l.status, l.attempts, l.idempotency_key, l.provider_ref, l.next_attempt_at, l.locked_by, l.replays,
    (CASE WHEN l.status = 'in_flight' AND l.locked_by IS NOT NULL
          THEN pg_try_advisory_xact_lock_shared(@lock_space::int4, l.locked_by)
          ELSE false END)::boolean AS owner_gone;

-- name: LedgerReopen :execrows
-- A dead letter replayed by `outbox dlq replay` (a higher replay count than
-- the row has seen) gets one more try.
UPDATE /* TEMPLATE: schema */sink_ledger
SET status = 'pending',
    replays = @replays::int4,
    next_attempt_at = NULL,
    updated_at = coalesce(sqlc.narg('now')::timestamptz, now())
WHERE endpoint = @endpoint AND event_id = @event_id AND status = 'dead_lettered' AND replays < @replays::int4;

-- name: LedgerStartAttempt :one
-- Claims the row for one call: in_flight, attempt n+1, locked by owner.
UPDATE /* TEMPLATE: schema */sink_ledger
SET status = 'in_flight',
    attempts = attempts + 1,
    locked_at = coalesce(sqlc.narg('now')::timestamptz, now()),
    locked_by = @owner::int4,
    next_attempt_at = NULL,
    updated_at = coalesce(sqlc.narg('now')::timestamptz, now())
WHERE endpoint = @endpoint AND event_id = @event_id
RETURNING attempts;

-- name: LedgerTransition :execrows
-- Moves a row that is not in flight from one status to another (unknown ->
-- succeeded after reconciliation, failed -> dead_lettered, in_flight of a dead
-- owner -> unknown or retrying).
UPDATE /* TEMPLATE: schema */sink_ledger
SET status = @to_status,
    last_error = coalesce(sqlc.narg('last_error'), last_error),
    provider_ref = coalesce(sqlc.narg('provider_ref'), provider_ref),
    next_attempt_at = sqlc.narg('next_attempt_at'),
    reconciled_at = CASE WHEN @reconciled::boolean THEN coalesce(sqlc.narg('now')::timestamptz, now()) ELSE reconciled_at END,
    locked_at = NULL,
    locked_by = NULL,
    updated_at = coalesce(sqlc.narg('now')::timestamptz, now())
WHERE endpoint = @endpoint AND event_id = @event_id AND status = @from_status;

-- name: LedgerInsertAttempt :exec
INSERT INTO /* TEMPLATE: schema */sink_attempts
    (endpoint, event_id, n, outcome, status_code, body_digest, body_head, error, latency_ms, started_at, finished_at)
VALUES (@endpoint, @event_id, @n, @outcome, sqlc.narg('status_code'), sqlc.narg('body_digest'), sqlc.narg('body_head'),
        sqlc.narg('error'), sqlc.narg('latency_ms'), @started_at, coalesce(sqlc.narg('now')::timestamptz, now()))
ON CONFLICT (endpoint, event_id, n, outcome) DO NOTHING;

-- name: LedgerGet :one
SELECT * FROM /* TEMPLATE: schema */sink_ledger WHERE endpoint = @endpoint AND event_id = @event_id;

-- name: LedgerAttempts :many
SELECT * FROM /* TEMPLATE: schema */sink_attempts
WHERE endpoint = @endpoint AND event_id = @event_id
ORDER BY n, finished_at;

-- name: LedgerCountByStatus :many
-- Rows per endpoint and status touched since a time: what `outbox sink status`
-- prints and the ledger gauges export.
SELECT endpoint, status, count(*) AS rows
FROM /* TEMPLATE: schema */sink_ledger
WHERE updated_at >= @since::timestamptz
GROUP BY endpoint, status
ORDER BY endpoint, status;

-- name: LedgerList :many
-- Every row of an endpoint, for tests and tools that audit the ledger.
SELECT * FROM /* TEMPLATE: schema */sink_ledger WHERE endpoint = @endpoint ORDER BY event_id;

-- name: LedgerClaimNew :one
-- The fast path of a claim for an event the ledger has never seen: one
-- statement inserts the row already in_flight under owner. No row means the
-- event is known; the caller then runs the full claim (LedgerLock).
INSERT INTO /* TEMPLATE: schema */sink_ledger AS l
    (endpoint, event_id, idempotency_key, topic, kafka_partition, kafka_offset,
     status, attempts, locked_at, locked_by, created_at, updated_at)
VALUES (@endpoint, @event_id, @idempotency_key, @topic, @kafka_partition, @kafka_offset,
        'in_flight', 1, coalesce(sqlc.narg('now')::timestamptz, now()), @owner::int4,
        coalesce(sqlc.narg('now')::timestamptz, now()), coalesce(sqlc.narg('now')::timestamptz, now()))
ON CONFLICT (endpoint, event_id) DO NOTHING
RETURNING l.attempts;

-- name: LedgerRecordOutcome :execrows
-- Records the outcome of the owner's call and its attempt row in one
-- statement (one transaction). No row means the owner lost the row.
WITH updated AS (
    UPDATE /* TEMPLATE: schema */sink_ledger AS l
    SET status = @status::text,
        last_status_code = sqlc.narg('status_code')::int4,
        last_error = sqlc.narg('error')::text,
        provider_ref = coalesce(sqlc.narg('provider_ref')::text, l.provider_ref),
        next_attempt_at = sqlc.narg('next_attempt_at')::timestamptz,
        locked_at = NULL,
        locked_by = NULL,
        updated_at = coalesce(sqlc.narg('now')::timestamptz, now())
    WHERE l.endpoint = @endpoint::text AND l.event_id = @event_id::uuid AND l.status = 'in_flight' AND l.locked_by = @owner::int4
    RETURNING l.endpoint, l.event_id
)
INSERT INTO /* TEMPLATE: schema */sink_attempts
    (endpoint, event_id, n, outcome, status_code, body_digest, body_head, error, latency_ms, started_at, finished_at)
SELECT u.endpoint, u.event_id, @n::int4, @outcome::text, sqlc.narg('status_code')::int4, sqlc.narg('body_digest')::text, sqlc.narg('body_head')::bytea,
       sqlc.narg('error')::text, sqlc.narg('latency_ms')::int8, @started_at::timestamptz, coalesce(sqlc.narg('now')::timestamptz, now())
FROM updated u;
