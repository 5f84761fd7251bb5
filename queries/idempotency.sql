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
