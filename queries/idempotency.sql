-- name: TryLockKey :one
-- A transaction-scoped advisory lock on the key: taken means another transaction
-- is processing the same key right now, so the caller answers 409 at once
-- instead of waiting on the unique index.
SELECT pg_try_advisory_xact_lock(hashtextextended(@scope::text || E'\x1f' || @idem_key::text, 7)) AS locked;

-- name: ClaimKey :one
-- Inserts the key, or takes over an expired one. No row means the key exists and
-- is live: read it with GetKey.
INSERT INTO /* TEMPLATE: schema */idempotency_keys AS k (scope, idem_key, fingerprint, created_at, expires_at)
VALUES (@scope, @idem_key, @fingerprint, coalesce(sqlc.narg('now')::timestamptz, now()),
        coalesce(sqlc.narg('now')::timestamptz, now()) + make_interval(secs => @ttl_seconds::float8))
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
RETURNING k.created_at;

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
