-- The sink's ledger: one row per (endpoint, event) that guards the external HTTP
-- call, and one row per attempt with what the provider answered. The claim
-- before a call and the record after it are each one transaction (sink/ledger.go).
--
-- Objects are created unqualified, in the first schema of search_path, like
-- 00001_outbox.sql.

-- +goose Up

-- sink_ledger says where each event stands with each endpoint:
--   pending        known, not yet called (held behind its key in ordered mode)
--   in_flight      claimed by the sink instance locked_by, call under way
--   succeeded      the provider accepted it (2xx, or reconciliation found it)
--   retrying       a retriable failure; next_attempt_at says when it is due
--   failed         out of attempts (or a permanent 4xx); dead letter not yet written
--   unknown        found in_flight after a crash on an endpoint that does not
--                  honour idempotency keys: awaiting reconciliation, never re-called blindly
--   dead_lettered  written to the dead-letter topic for a person
CREATE TABLE sink_ledger (
    endpoint         text        NOT NULL CHECK (endpoint <> ''),
    event_id         uuid        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'in_flight', 'succeeded', 'retrying', 'failed', 'unknown', 'dead_lettered')),
    -- attempts counts calls started, including ones whose outcome is unknown.
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- idempotency_key is the Idempotency-Key header sent on every attempt.
    idempotency_key  text        NOT NULL,
    -- provider_ref is the provider's own reference for the call, when it gives one.
    provider_ref     text,
    last_status_code integer,
    last_error       text,
    -- where the event came from, for on-call and the dead-letter record.
    topic            text        NOT NULL DEFAULT '',
    kafka_partition  integer     NOT NULL DEFAULT 0,
    kafka_offset     bigint      NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    -- locked_at and locked_by are set while in_flight: locked_by is the claiming
    -- sink instance, which holds a session advisory lock (classid 'sink' space,
    -- objid locked_by) for its lifetime, so a row whose owner died is told apart
    -- from one whose owner is still calling.
    locked_at        timestamptz,
    locked_by        integer,
    -- replays is the highest `outbox dlq replay` count (outbox.dlt.replay_count)
    -- seen for the event: a replay with a higher count reopens a dead_lettered
    -- row for one more try; a redelivered copy of the same replay does not.
    replays          integer     NOT NULL DEFAULT 0,
    -- reconciled_at is set when an unknown outcome was settled by the status lookup.
    reconciled_at    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, event_id)
);

-- `outbox sink status` and the ledger gauges count rows per status over a window.
CREATE INDEX sink_ledger_updated_at ON sink_ledger (updated_at, status);
-- Rows that need a person or a sweep: not in a final state.
CREATE INDEX sink_ledger_open ON sink_ledger (status, next_attempt_at)
    WHERE status IN ('pending', 'in_flight', 'retrying', 'failed', 'unknown');

-- sink_attempts keeps every response: one row per call (or status lookup).
CREATE TABLE sink_attempts (
    endpoint     text        NOT NULL,
    event_id     uuid        NOT NULL,
    n            integer     NOT NULL CHECK (n > 0),
    -- outcome: succeeded | retriable | permanent | indeterminate | reconciled
    outcome      text        NOT NULL,
    status_code  integer,
    -- body_digest is the SHA-256 of the response body (hex), body_head its first bytes.
    body_digest  text,
    body_head    bytea,
    error        text,
    latency_ms   bigint,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, event_id, n, outcome),
    FOREIGN KEY (endpoint, event_id) REFERENCES sink_ledger (endpoint, event_id) ON DELETE CASCADE
);

-- +goose Down
DROP TABLE sink_attempts;
DROP TABLE sink_ledger;
