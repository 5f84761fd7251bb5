// Package outbox is the writer library an order service imports: it writes
// events into the outbox table and claims HTTP idempotency keys inside the
// caller's own pgx.Tx, so business rows, events and the key commit or roll back
// together. It is the first stage of the pipeline:
//
//	order service (outbox) -> relay (Postgres -> Kafka) -> eos (Kafka -> Kafka) -> sink (Kafka -> HTTP)
//
// Kafka being down never blocks or fails the writing transaction: the relay
// reads committed events from the WAL later. Events are validated before any SQL
// runs (missing aggregate, payload over the limit, invalid JSON, headers too
// large), so a rejected write leaves nothing behind and the transaction usable.
//
// # Commit and rollback
//
// Write and ClaimKey only add statements to the caller's transaction. Commit
// makes the business rows, the events and the key visible at once; the relay
// then publishes the events exactly once. Rollback leaves none of them: no event
// is published and the idempotency key is free again.
//
// # Idempotency keys
//
// ClaimKey follows the HTTP Idempotency-Key draft (and Stripe): the first
// request with a key claims it; a retry with the same key and the same request
// fingerprint gets the stored response (replay); the same key with another
// fingerprint is ErrKeyMismatch (answer 422); a key whose first request is still
// running is ErrKeyInFlight (answer 409). Keys expire after Config.KeyTTL.
// Run the transaction at READ COMMITTED (Postgres's default). ClaimAndWrite
// claims the key, writes the events and stores the response in one statement,
// when the response is known before the work.
//
// # Trace context
//
// Write copies the W3C trace context of ctx (OpenTelemetry's propagator) and the
// correlation and causation ids set with WithCorrelationID and WithCausationID
// into each event's headers, so the external call at the end of the pipeline
// carries the order request's trace.
package outbox
