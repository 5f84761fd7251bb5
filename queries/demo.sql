-- What `outbox demo` counts for its progress view and audit.

-- name: DemoLedgerCounts :many
SELECT endpoint::text AS endpoint, status::text AS status, count(*)::bigint AS n,
       count(*) FILTER (WHERE reconciled_at IS NOT NULL)::bigint AS reconciled
FROM /* TEMPLATE: schema */sink_ledger
GROUP BY endpoint, status
ORDER BY endpoint, status;

-- name: DemoEventIDs :many
SELECT event_id FROM /* TEMPLATE: schema */events WHERE event_type = 'order.created';

-- name: DemoWebhookEntities :many
SELECT entity_type, entity_id, version FROM /* TEMPLATE: schema */webhook_entities WHERE source = $1;
