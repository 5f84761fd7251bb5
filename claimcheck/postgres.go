package claimcheck

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/pgschema"
	"github.com/outboxrelay/outbox/sql"
)

// SchemePostgres is the scheme of references to the Postgres store: "pg:<event_id>".
const SchemePostgres = "pg"

// Postgres stores payloads in the outbox schema's claim_check_payloads table
// (migration 00006_claimcheck.sql), one row per event keyed by event_id.
// Put runs in the writer's transaction, so the payload and the event commit
// or roll back together, and the table's day partitions are dropped by
// maintain with the events of the same day: no orphans, no sweep.
type Postgres struct {
	schema string
	db     sql.DBTX
	q      *sql.Queries
}

// PostgresConfig configures a Postgres store.
type PostgresConfig struct {
	// Schema holds claim_check_payloads, the outbox's schema. Defaults to "outbox".
	Schema string
	// DB is what Get reads through, usually a *pgxpool.Pool. Defaults to none:
	// a writer only puts, through its transaction, and Get then fails.
	DB sql.DBTX
}

// NewPostgres validates cfg and returns the store.
func NewPostgres(cfg PostgresConfig) (*Postgres, error) {
	if cfg.Schema == "" {
		cfg.Schema = pgschema.Default
	}
	if err := pgschema.Validate(cfg.Schema); err != nil {
		return nil, fmt.Errorf("claimcheck: postgres store: %w", err)
	}
	return &Postgres{schema: cfg.Schema, db: cfg.DB, q: sql.New()}, nil
}

// Scheme returns SchemePostgres.
func (p *Postgres) Scheme() string { return SchemePostgres }

// Put inserts payload for eventID through tx, the writer's transaction.
func (p *Postgres) Put(ctx context.Context, tx sql.DBTX, eventID uuid.UUID, payload []byte) (Ref, error) {
	if tx == nil {
		return Ref{}, errors.New("claimcheck: postgres put: no transaction")
	}
	err := p.q.PutClaimCheckPayload(ctx, sql.InSchema(tx, p.schema), sql.PutClaimCheckPayloadParams{EventID: eventID, Payload: payload})
	if err != nil {
		return Ref{}, fmt.Errorf("claimcheck: postgres put %s: %w", eventID, err)
	}
	return NewRef(SchemePostgres+":"+eventID.String(), payload), nil
}

// Get reads the payload ref names. A pruned or rolled-back payload gives
// ErrNotFound.
func (p *Postgres) Get(ctx context.Context, ref Ref) ([]byte, error) {
	rest, ok := strings.CutPrefix(ref.URI, SchemePostgres+":")
	id, err := uuid.Parse(rest)
	if !ok || err != nil {
		return nil, fmt.Errorf("claimcheck: %q is not a pg:<event_id> reference: %w", ref.URI, ErrInvalidRef)
	}
	if p.db == nil {
		return nil, fmt.Errorf("claimcheck: postgres get %s: the store has no database to read from (PostgresConfig.DB)", ref.URI)
	}
	b, err := p.q.GetClaimCheckPayload(ctx, sql.InSchema(p.db, p.schema), id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("claimcheck: %s: %w", ref.URI, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("claimcheck: postgres get %s: %w", ref.URI, err)
	}
	return b, nil
}
