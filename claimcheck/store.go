package claimcheck

import (
	"context"

	"github.com/google/uuid"

	"github.com/outboxrelay/outbox/sql"
)

// Store keeps claim-checked payloads. The writer calls Put inside the
// caller's transaction; a Resolver calls Get.
type Store interface {
	// Scheme is the URI scheme of the references the store makes and reads
	// ("pg", "s3").
	Scheme() string
	// Put stores payload for the event and returns its reference. tx is the
	// writer's transaction: a store in Postgres writes through it, so the
	// payload commits or rolls back with the event; a store elsewhere ignores
	// it (and leaves an orphan when tx rolls back).
	Put(ctx context.Context, tx sql.DBTX, eventID uuid.UUID, payload []byte) (Ref, error)
	// Get returns the bytes stored for ref, unchecked (the Resolver checks
	// them), or an error wrapping ErrNotFound.
	Get(ctx context.Context, ref Ref) ([]byte, error)
}
