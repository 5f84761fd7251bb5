-- Webhook ingestion (package ingest, migrations/00005_ingest.sql). Each query
-- qualifies its tables with /* TEMPLATE: schema */, which the runtime replaces
-- with the configured schema (see sql/schema.go).

-- name: AcceptWebhookVersion :one
-- The ordering check and the update in one statement. A new entity is
-- inserted; an existing one is updated only when the delivery is newer, by
-- (version, updated_at) compared as a pair. Either way the row stays locked
-- until the transaction ends, so a concurrent delivery of the same entity
-- waits here and then compares against what this one committed. No row
-- returned (pgx.ErrNoRows) means stale: the known version is equal or newer.
INSERT INTO /* TEMPLATE: schema */webhook_entities AS e
    (source, entity_type, entity_id, version, updated_at, delivery_id, accepted_at)
VALUES (@source::text, @entity_type::text, @entity_id::text, @version::bigint,
        coalesce(sqlc.narg('updated_at')::timestamptz, '-infinity'::timestamptz), @delivery_id::text,
        coalesce(sqlc.narg('now')::timestamptz, now()))
ON CONFLICT (source, entity_type, entity_id) DO UPDATE
    SET version = EXCLUDED.version,
        updated_at = EXCLUDED.updated_at,
        delivery_id = EXCLUDED.delivery_id,
        accepted_at = EXCLUDED.accepted_at
    WHERE (e.version, e.updated_at) < (EXCLUDED.version, EXCLUDED.updated_at)
RETURNING e.version;

-- name: GetWebhookEntity :one
-- The accepted version of one entity, for tests and operators.
SELECT version, delivery_id, (updated_at = '-infinity'::timestamptz)::boolean AS no_updated_at,
       CASE WHEN updated_at = '-infinity'::timestamptz THEN now() ELSE updated_at END::timestamptz AS updated_at
FROM /* TEMPLATE: schema */webhook_entities
WHERE source = @source AND entity_type = @entity_type AND entity_id = @entity_id;

-- name: ProbeWebhookEntities :exec
-- Fails unless webhook_entities exists in the schema (migration 00005 ran):
-- the readiness check of `outbox ingest`, which could store nothing without it.
SELECT count(*) FROM /* TEMPLATE: schema */webhook_entities WHERE false;
