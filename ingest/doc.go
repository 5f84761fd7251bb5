// Package ingest receives webhooks from third-party APIs (Stripe, GitHub, any
// HMAC-signed sender) and writes them into the outbox, durable before they are
// acknowledged. It sits in front of the pipeline, beside the order services
// that write through package outbox:
//
//	provider --HTTP--> ingest (outbox) -> relay (Postgres -> Kafka) -> eos -> sink
//
// A Handler serves POST /webhooks/{source}. For each delivery it verifies the
// signature (401 and nothing written when it does not match), deduplicates by
// the provider's event id with the writer's idempotency keys (a redelivery
// replays the stored answer and writes nothing), and, in one Postgres
// transaction, writes the raw webhook as an event and, for a delivery newer
// than the entity's last accepted one, a record (compacted topic, key
// SOURCE.TYPE.ID) and a right-sized event. Only after COMMIT does it answer
// 2xx.
//
// # Ordering by version
//
// Providers deliver out of order and may not resend. The version check is a
// conditional upsert on the webhook_entities table (migration 00005) in the
// same transaction: the row is inserted or updated only when the delivery's
// (version, updated_at) is greater than the stored one, and the row lock it
// takes makes a concurrent delivery of the same entity wait and compare
// against what the first one committed. Check and update are therefore one
// atomic step (unlike a Redis GET then SET), and the records of one entity
// commit in strictly increasing version order, which is the order the relay
// publishes them in. A stale delivery is still answered 200 (the provider
// must not retry it) and is kept as a raw event marked stale.
//
// docs/ingest.md describes the configuration file, the presets, the errors
// and the metrics.
package ingest
