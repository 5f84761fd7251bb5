package sink

import "errors"

var (
	// ErrInvalidConfig is returned by New when the Config is incomplete or
	// inconsistent; the wrapped message names the field.
	ErrInvalidConfig = errors.New("sink: invalid config")

	// ErrStopped is returned by Start when the Sink was already stopped, and by
	// Wait after a clean Stop.
	ErrStopped = errors.New("sink: stopped")

	// ErrAlreadyStarted is returned by Start on a Sink that is running.
	ErrAlreadyStarted = errors.New("sink: already started")

	// ErrOwnerLockLost is returned by Wait when the session that holds the
	// instance's advisory lock fails. The sink stops at once: other instances
	// may now treat its in-flight rows as abandoned.
	ErrOwnerLockLost = errors.New("sink: lost the ledger owner lock")

	// ErrLostClaim is logged when recording an outcome finds the ledger row no
	// longer in_flight under this instance. It means another process took the
	// row over, which the owner lock is there to prevent.
	ErrLostClaim = errors.New("sink: ledger row no longer claimed by this instance")

	// ErrNoEventID is the dead-letter error class of a record without a valid
	// event_id header: it cannot be deduplicated, so it is never called.
	ErrNoEventID = errors.New("sink: record has no valid event_id header")
)
