// Package eos is the exactly-once consume-transform-produce stage of the
// pipeline (Kafka to Kafka): it reads the relayed events of one or more input
// topics in a consumer group, calls the user's TransformFunc on each, and
// produces the outputs together with the input offsets in one Kafka
// transaction.
//
// It is built on franz-go's kgo.GroupTransactSession:
//
//   - input is read with read_committed, so aborted relay or stage output is
//     never seen, and with stable fetch offsets (KIP-447), so a new partition
//     owner waits until the previous owner's transaction is settled;
//   - each transaction holds at most Config.MaxRecordsPerTxn inputs, processed
//     on one goroutine in partition order, so per-partition (per-key) order is
//     kept from input to output;
//   - a record the transform rejects (an error, a panic, a payload it cannot
//     decode) is written to Config.DeadLetterTopic in the same transaction with
//     envelope.DeadLetter headers (Kafka Connect's __connect.errors.* and
//     Spring's kafka_dlt-* names), so nothing blocks and nothing is lost;
//   - every produce promise is checked before the stage asks to commit
//     (kgo.TryCommit, else kgo.TryAbort); a rebalance during a transaction
//     aborts it and the stage resumes from the committed offsets;
//   - an error ending a transaction (fenced, timed out, outcome unknown) closes
//     the session; the next one initialises the producer again, which fences a
//     zombie and settles the last transaction, and resumes from the group's
//     committed offsets. The transaction timeout must be below the session
//     timeout.
//
// A Stage runs with Run(ctx), or Start and Stop; shutdown aborts the open
// transaction and leaves the group within Config.ShutdownTimeout. Metrics
// (records in, out and dead-lettered, transactions committed and aborted,
// commit latency, lag per partition against the last stable offset) go to
// Config.Registerer.
//
// The package never imports an embedded broker: tests run on kfake through
// internal/testkit/kafkatest, or on real brokers from OUTBOX_TEST_KAFKA_BROKERS.
// docs/eos.md has the operational view; eos/orders is the transform the binary
// ships.
package eos
