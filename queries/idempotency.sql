-- name: ClaimKey :one
-- One round trip decides a claim. A transaction-scoped advisory lock on the key
-- tells whether another transaction is processing it right now (then the caller
-- answers 409 at once instead of waiting on the unique index); with the lock,
-- the key is inserted, or an expired one taken over; otherwise the live row is
-- returned for the caller to compare fingerprints and replay its response.
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(hashtextextended(@scope::text || E'\x1f' || @idem_key::text, 7)) AS locked
), claimed AS (
    INSERT INTO /* TEMPLATE: schema */idempotency_keys AS k (scope, idem_key, fingerprint, created_at, expires_at)
    SELECT @scope::text, @idem_key::text, @fingerprint::text, coalesce(sqlc.narg('now')::timestamptz, now()),
           coalesce(sqlc.narg('now')::timestamptz, now()) + make_interval(secs => @ttl_seconds::float8)
    FROM lock WHERE lock.locked
    ON CONFLICT (scope, idem_key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint,
            status = 'started',
            response_code = NULL,
            response_headers = NULL,
            response_body = NULL,
            created_at = EXCLUDED.created_at,
            completed_at = NULL,
            expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= coalesce(sqlc.narg('now')::timestamptz, now())
    RETURNING k.idem_key
)
SELECT
    (SELECT lock.locked FROM lock)::boolean AS locked,
    EXISTS (SELECT 1 FROM claimed)::boolean AS claimed,
    e.fingerprint AS fingerprint,
    e.status AS status,
    e.response_code AS response_code,
    e.response_headers AS response_headers,
    e.response_body AS response_body,
    e.expires_at AS expires_at
FROM (SELECT 1) AS one
LEFT JOIN /* TEMPLATE: schema */idempotency_keys AS e ON e.scope = @scope::text AND e.idem_key = @idem_key::text;

-- name: GetKey :one
SELECT * FROM /* TEMPLATE: schema */idempotency_keys WHERE scope = @scope AND idem_key = @idem_key;

-- name: CompleteKey :execrows
UPDATE /* TEMPLATE: schema */idempotency_keys
SET status = 'completed',
    response_code = @response_code,
    response_headers = @response_headers,
    response_body = @response_body,
    completed_at = coalesce(sqlc.narg('now')::timestamptz, now())
WHERE scope = @scope AND idem_key = @idem_key AND status = 'started';

-- name: CountKeys :one
SELECT count(*) FROM /* TEMPLATE: schema */idempotency_keys;

-- name: ClaimKeyWriteEvent :one
-- ClaimKey and Write of one event in one statement: the claim as ClaimKey
-- decides it and, only when it is won, the event's insert. With a response
-- code the key is stored completed with its response at once (no CompleteKey
-- UPDATE later); without one it is stored started, as ClaimKey does. The
-- result is ClaimKey's.
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(hashtextextended(@scope::text || E'\x1f' || @idem_key::text, 7)) AS locked
), claimed AS (
    INSERT INTO /* TEMPLATE: schema */idempotency_keys AS k
        (scope, idem_key, fingerprint, status, response_code, response_headers, response_body, created_at, completed_at, expires_at)
    SELECT @scope::text, @idem_key::text, @fingerprint::text,
           CASE WHEN sqlc.narg('response_code')::integer IS NULL THEN 'started' ELSE 'completed' END,
           sqlc.narg('response_code')::integer, sqlc.narg('response_headers')::jsonb, sqlc.narg('response_body')::bytea,
           coalesce(sqlc.narg('now')::timestamptz, now()),
           CASE WHEN sqlc.narg('response_code')::integer IS NOT NULL THEN coalesce(sqlc.narg('now')::timestamptz, now()) END,
           coalesce(sqlc.narg('now')::timestamptz, now()) + make_interval(secs => @ttl_seconds::float8)
    FROM lock WHERE lock.locked
    ON CONFLICT (scope, idem_key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint,
            status = EXCLUDED.status,
            response_code = EXCLUDED.response_code,
            response_headers = EXCLUDED.response_headers,
            response_body = EXCLUDED.response_body,
            created_at = EXCLUDED.created_at,
            completed_at = EXCLUDED.completed_at,
            expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= coalesce(sqlc.narg('now')::timestamptz, now())
    RETURNING k.idem_key
), written AS (
    INSERT INTO /* TEMPLATE: schema */events
        (event_id, aggregate_type, aggregate_id, event_type, topic, fanout_topics, kind, content_type, payload, headers, occurred_at)
    SELECT @event_id::uuid, @aggregate_type::text, @aggregate_id::text, @event_type::text, @topic::text, @fanout_topics::text[],
           @kind::text, @content_type::text, @payload::bytea, @headers::jsonb, @occurred_at::timestamptz
    FROM claimed
)
SELECT
    (SELECT lock.locked FROM lock)::boolean AS locked,
    EXISTS (SELECT 1 FROM claimed)::boolean AS claimed,
    e.fingerprint AS fingerprint,
    e.status AS status,
    e.response_code AS response_code,
    e.response_headers AS response_headers,
    e.response_body AS response_body,
    e.expires_at AS expires_at
FROM (SELECT 1) AS one
LEFT JOIN /* TEMPLATE: schema */idempotency_keys AS e ON e.scope = @scope::text AND e.idem_key = @idem_key::text;

-- name: ClaimKeyWriteEvents :one
-- ClaimKeyWriteEvent for any number of events (none too), in InsertEvents'
-- form: the events are inserted only when the claim is won.
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(hashtextextended(@scope::text || E'\x1f' || @idem_key::text, 7)) AS locked
), claimed AS (
    INSERT INTO /* TEMPLATE: schema */idempotency_keys AS k
        (scope, idem_key, fingerprint, status, response_code, response_headers, response_body, created_at, completed_at, expires_at)
    SELECT @scope::text, @idem_key::text, @fingerprint::text,
           CASE WHEN sqlc.narg('response_code')::integer IS NULL THEN 'started' ELSE 'completed' END,
           sqlc.narg('response_code')::integer, sqlc.narg('response_headers')::jsonb, sqlc.narg('response_body')::bytea,
           coalesce(sqlc.narg('now')::timestamptz, now()),
           CASE WHEN sqlc.narg('response_code')::integer IS NOT NULL THEN coalesce(sqlc.narg('now')::timestamptz, now()) END,
           coalesce(sqlc.narg('now')::timestamptz, now()) + make_interval(secs => @ttl_seconds::float8)
    FROM lock WHERE lock.locked
    ON CONFLICT (scope, idem_key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint,
            status = EXCLUDED.status,
            response_code = EXCLUDED.response_code,
            response_headers = EXCLUDED.response_headers,
            response_body = EXCLUDED.response_body,
            created_at = EXCLUDED.created_at,
            completed_at = EXCLUDED.completed_at,
            expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= coalesce(sqlc.narg('now')::timestamptz, now())
    RETURNING k.idem_key
), written AS (
    INSERT INTO /* TEMPLATE: schema */events
        (event_id, aggregate_type, aggregate_id, event_type, topic, fanout_topics, kind, content_type, payload, headers, occurred_at)
    SELECT
        t.event_id, t.aggregate_type, t.aggregate_id, t.event_type, t.topic,
        ARRAY(SELECT jsonb_array_elements_text(t.fanout)),
        t.kind, t.content_type, t.payload, t.headers, t.occurred_at
    FROM (
        SELECT
            unnest(@event_ids::uuid[]) AS event_id,
            unnest(@aggregate_types::text[]) AS aggregate_type,
            unnest(@aggregate_ids::text[]) AS aggregate_id,
            unnest(@event_types::text[]) AS event_type,
            unnest(@topics::text[]) AS topic,
            unnest(@fanouts::jsonb[]) AS fanout,
            unnest(@kinds::text[]) AS kind,
            unnest(@content_types::text[]) AS content_type,
            unnest(@payloads::bytea[]) AS payload,
            unnest(@headers::jsonb[]) AS headers,
            unnest(@occurred_ats::timestamptz[]) AS occurred_at
    ) AS t
    WHERE EXISTS (SELECT 1 FROM claimed)
)
SELECT
    (SELECT lock.locked FROM lock)::boolean AS locked,
    EXISTS (SELECT 1 FROM claimed)::boolean AS claimed,
    e.fingerprint AS fingerprint,
    e.status AS status,
    e.response_code AS response_code,
    e.response_headers AS response_headers,
    e.response_body AS response_body,
    e.expires_at AS expires_at
FROM (SELECT 1) AS one
LEFT JOIN /* TEMPLATE: schema */idempotency_keys AS e ON e.scope = @scope::text AND e.idem_key = @idem_key::text;
