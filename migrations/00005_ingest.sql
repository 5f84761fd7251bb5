-- webhook_entities: the last accepted version of every entity that `outbox
-- ingest` (package ingest) has turned into a record. One row per (source,
-- entity type, entity id). The ingest transaction upserts it with
-- AcceptWebhookVersion (queries/ingest.sql): the insert or update happens only
-- when the delivery's (version, updated_at) is greater than the row's, and the
-- row lock it takes serialises concurrent deliveries of one entity, so the
-- check and the update are one atomic step and the records of one entity
-- commit (and are relayed) in version order.
--
-- A source that orders by version only stores '-infinity' in updated_at; one
-- that orders by updated_at only stores 0 in version: the pair compares as
-- either one alone. Rows are never pruned: they are the known state that makes
-- a late, older delivery stale however long after it arrives.
--
-- Objects are created unqualified, in the first schema of search_path, like
-- 00001_outbox.sql.

-- +goose Up
CREATE TABLE webhook_entities (
    source      text        NOT NULL CHECK (source <> ''),
    entity_type text        NOT NULL CHECK (entity_type <> ''),
    entity_id   text        NOT NULL CHECK (entity_id <> ''),
    version     bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT '-infinity',
    -- delivery_id is the provider's event id of the accepted delivery.
    delivery_id text        NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, entity_type, entity_id)
);

-- +goose Down
DROP TABLE webhook_entities;
