// Package claimcheck keeps payloads too large for Kafka outside it and puts a
// reference in the event instead (the claim-check pattern).
//
// It sits beside the envelope package, shared by every stage that sees a
// payload: the writer (outbox.Config.ClaimCheck) stores the payload through a
// Store and writes the reference headers (HeaderRef, HeaderSize, HeaderSHA256)
// and a small stub as the row's payload; the relay copies the headers to Kafka
// unchanged; eos and sink (their ClaimCheck options) and `outbox dlq show` turn
// the reference back into the payload with a Resolver before the transform or
// the HTTP call. The stages never import each other, so the shared code lives
// here.
//
// Two stores:
//
//   - Postgres (NewPostgres): a row in claim_check_payloads (migration
//     00006_claimcheck.sql), written in the writer's own transaction, so commit
//     and rollback cover the event and its payload together, and partitioned by
//     event_id into the same days as events, so the outbox's retention
//     (maintain) drops payloads with their events. The reference is
//     "pg:<event_id>".
//   - S3 (NewS3): an object in an S3-compatible bucket, "s3://bucket/key",
//     uploaded before the writer's transaction commits. An upload whose
//     transaction rolls back leaves an orphan object that no event references;
//     a bucket lifecycle rule that expires the prefix after the outbox's
//     retention removes orphans and referenced payloads alike (docs/writer.md).
//
// Every read checks the stored bytes against the size and SHA-256 digest in the
// headers, so a truncated or swapped payload is an error, never silently
// delivered.
package claimcheck
