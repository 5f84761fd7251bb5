-- Every query names its tables after /* TEMPLATE: schema */, which the runtime
-- replaces with the configured schema (see sql/schema.go).

-- name: InsertEvents :exec
-- One statement, one round trip, for any number of events.
INSERT INTO /* TEMPLATE: schema */events
    (event_id, aggregate_type, aggregate_id, event_type, topic, fanout_topics, kind, content_type, payload, headers, occurred_at)
SELECT
    t.event_id, t.aggregate_type, t.aggregate_id, t.event_type, t.topic,
    -- text[][] cannot be unnested row by row, so fan-out lists travel as JSON arrays.
    ARRAY(SELECT jsonb_array_elements_text(t.fanout)),
    t.kind, t.content_type, t.payload, t.headers, t.occurred_at
FROM (
    -- Set-returning functions in one select list advance in lockstep (Postgres 10+).
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
) AS t;

-- name: InsertEvent :exec
-- One event: a plain VALUES insert plans and runs faster than the unnest form.
INSERT INTO /* TEMPLATE: schema */events
    (event_id, aggregate_type, aggregate_id, event_type, topic, fanout_topics, kind, content_type, payload, headers, occurred_at)
VALUES (@event_id, @aggregate_type, @aggregate_id, @event_type, @topic, @fanout_topics::text[], @kind, @content_type, @payload, @headers, @occurred_at);

-- name: CountEvents :one
SELECT count(*) FROM /* TEMPLATE: schema */events;

-- name: GetEvent :one
SELECT * FROM /* TEMPLATE: schema */events WHERE event_id = @event_id;

-- name: Maintain :many
SELECT action::text AS action, object::text AS object
FROM /* TEMPLATE: schema */maintain(@retention::interval, @premake::integer, coalesce(sqlc.narg('now')::timestamptz, now()));
