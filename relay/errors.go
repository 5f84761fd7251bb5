package relay

import (
	"errors"

	"github.com/outboxrelay/outbox/schema"
)

// Sentinel errors Run returns; callers branch on them with errors.Is. Every
// other error Run sees (a dropped connection, a failed or unknown Kafka commit)
// is retried from the slot, which tells the relay the truth.
var (
	// ErrSlotInUse is returned when another connection holds the replication
	// slot and Config.NoStandby is set. Without NoStandby the relay waits as a
	// hot standby instead.
	ErrSlotInUse = errors.New("relay: replication slot is held by another connection (another relay is active)")

	// ErrWALLevel is returned when the server's wal_level is not logical. Set
	// wal_level = logical in postgresql.conf and restart Postgres.
	ErrWALLevel = errors.New("relay: wal_level is not logical: set wal_level = logical and restart Postgres")

	// ErrNoPublication is returned when the publication is missing and
	// Config.NoCreate forbids creating it. Run `outbox migrate up`.
	ErrNoPublication = errors.New("relay: publication does not exist")

	// ErrNoSlot is returned when the replication slot is missing and
	// Config.NoCreate forbids creating it.
	ErrNoSlot = errors.New("relay: replication slot does not exist")

	// ErrSlotMoved is returned when the slot's confirmed position does not fit
	// the checkpoint in Kafka: the slot was dropped and recreated, advanced by
	// someone else, or belongs to another server. Events may have been skipped.
	// Config.AcceptSlotPosition continues from the slot's position anyway.
	ErrSlotMoved = errors.New("relay: replication slot position does not match the Kafka checkpoint; events may have been skipped")

	// ErrWALLost is returned when Postgres removed WAL the slot still needed
	// (wal_status "lost", after max_slot_wal_keep_size). Events in that WAL
	// cannot be relayed: the operator must drop the slot, recreate it, and
	// reconcile the events written while the relay was behind (they are still
	// in the events table until retention removes them).
	ErrWALLost = errors.New("relay: replication slot lost WAL it needed (wal_status lost); events were not relayed")

	// ErrUnknownTopic is returned by a repair when a topic the rows route to
	// does not exist and the relay may not create topics.
	ErrUnknownTopic = errors.New("relay: topic does not exist")

	// ErrRelayBehind is returned by Republish when the relay streaming the
	// slot has not relayed, within RepublishConfig.WaitTimeout, everything
	// committed before the republish began: rows of the window may still
	// arrive by the stream, so publishing them now could duplicate them.
	ErrRelayBehind = errors.New("relay: the relay's slot has not caught up with the republish snapshot")

	// ErrBadSlot is returned when the slot exists but is not a pgoutput slot of
	// this database.
	ErrBadSlot = errors.New("relay: replication slot is not a pgoutput slot of this database")

	// ErrSchemaMismatch is returned when Config.Encoder refuses an event's
	// payload as not matching its schema and no SchemaDeadLetterTopic is
	// set. The event stays in the slot; the error names it. It is
	// schema.ErrMismatch, so an Encoder's *schema.ValidationError matches.
	ErrSchemaMismatch = schema.ErrMismatch
)

// fatal reports whether err ends Run rather than starting a new session.
func fatal(err error) bool {
	for _, s := range []error{ErrSlotInUse, ErrWALLevel, ErrNoPublication, ErrNoSlot, ErrSlotMoved, ErrWALLost, ErrBadSlot, ErrSchemaMismatch, errConfig} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
