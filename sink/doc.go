// Package sink is the last stage of the pipeline: it consumes committed events
// from Kafka and calls external HTTP APIs (payment, shipping, ticketing, phone
// top-up) at most once per event, guarded by a ledger in Postgres.
//
// # The ledger
//
// Every (endpoint, event_id) pair has one row in sink_ledger (migrations
// 00002_ledger.sql) and one row per call in sink_attempts. Before a call the
// sink claims the row in one transaction (pending or retrying -> in_flight,
// attempt n, locked_at, locked_by); after the call it records the outcome in
// another (status code, SHA-256 of the body and its first bytes, error,
// latency); only then does it mark the Kafka offset for commit. A redelivered
// event whose row succeeded makes no call.
//
// Each sink instance holds a session advisory lock for its lifetime and writes
// its id into locked_by, so a row found in_flight is either owned by a live
// instance (the finder waits for it) or was left by a dead one. A dead owner's
// row is handled per endpoint: when the API honours Idempotency-Key
// (Endpoint.Idempotent) the call is retried with the same key; otherwise the
// row becomes unknown and goes to Endpoint.Reconcile (a status lookup) or to
// the dead-letter topic for a person. It is never re-called blindly.
//
// # Failures and retries
//
// Timeouts, connection errors, 5xx, 408, 409 and 429 (honouring Retry-After)
// are retried with exponential backoff and jitter up to RetryPolicy.Retries;
// other 4xx are permanent after RetryPolicy.PermanentRetries (default: at
// once). Past the maximum the row says failed, the record goes to the
// dead-letter topic with its whole attempt history (envelope.DeadLetter) and the
// row says dead_lettered.
//
// Retries do not block the partition. In ModeRetryTopics (the default) a
// failed record is re-published to a retry tier topic (<topic>.retry.1s,
// <topic>.retry.10s, <topic>.retry.1m, as in Spring's retryable topics) with
// its due time in a header, and consumed when due. In ModeOrdered, for flows
// that must keep per-key order (top-ups), later events of the same key wait in
// memory while one retries; other keys keep moving.
//
// A token-bucket rate limit and a circuit breaker guard each endpoint: while the
// breaker is open the workers wait instead of calling, their queues fill and
// the partitions are paused, so consumption stops instead of burning retries.
//
// # Consuming
//
// One worker goroutine per assigned partition keeps per-partition order; the
// consumer reads with read_committed and commits offsets it marked after the
// ledger recorded each record (at-least-once delivery to the sink, at-most-once
// calls through the ledger). Sink.Start / Sink.Stop run it; Status reads the
// ledger counts that `outbox sink status` prints.
package sink
