// Package relay is the second stage of the pipeline: it moves outbox rows from
// Postgres into Kafka exactly once.
//
//	outbox/ (write) -> relay/ (Postgres -> Kafka) -> eos/ (Kafka -> Kafka) -> sink/ (Kafka -> HTTP)
//
// A Relay holds the outbox publication's logical replication slot and streams it
// with pgoutput (github.com/jackc/pglogrepl). Postgres transactions arrive whole
// and in commit order; the relay writes them, batched, into one Kafka
// transaction of a franz-go transactional producer (acks=all, idempotent, a
// transactional id stable per slot) together with a checkpoint record on a
// compacted checkpoint topic keyed by the slot name (the KIP-618 design: the
// offset commits atomically with the data). Only after the Kafka commit does it
// confirm the end LSN to Postgres, so Postgres may recycle the WAL.
//
// On start it takes the slot first (a second relay on the same slot waits as a
// hot standby), then initialises the producer (fencing a zombie predecessor and
// resolving its open transaction), then reads the checkpoint read_committed to
// the end of the topic, and skips every Postgres transaction at or below it. A
// crash anywhere therefore gives neither loss nor duplicates as seen by
// read_committed consumers. After an error whose outcome is unknown it drops
// the producer and the replication connection and starts again from the slot.
//
// A Postgres transaction larger than Config.SplitEvents or Config.SplitBytes is
// split across Kafka transactions; the checkpoint then holds (commit LSN, rows
// relayed) and a restart resumes inside the transaction. Consumers see such a
// transaction in parts.
//
// An idle outbox on a busy database must not pin WAL: the relay emits
// pg_logical_emit_message heartbeats and confirms past them when nothing is
// pending. It never confirms a keepalive's WAL end.
//
// The relay never reads the events table: rows come from the WAL only.
package relay
