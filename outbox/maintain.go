package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/sql"
)

// MaintainOptions tunes Maintain.
type MaintainOptions struct {
	// Retention is how long events are kept. Defaults to 7 days. It must exceed
	// the relay's worst lag: Postgres decodes from WAL, so a dropped day that was
	// not yet relayed is still relayed, but it is gone from the table.
	Retention time.Duration
	// Premake is how many day partitions to keep ready ahead. Defaults to 3.
	Premake int
	// Now overrides the clock (tests). Defaults to the database's now().
	Now *time.Time
}

// MaintainAction is one thing Maintain did.
type MaintainAction struct {
	Action string // "created", "dropped" or "deleted"
	Object string
}

// Maintain keeps the events table's day partitions from yesterday to Premake
// days ahead, moves rows that landed in the default partition into their day,
// drops days older than Retention whole (no bloat, no vacuum), and deletes
// expired idempotency keys. Run it daily or more often; concurrent runs
// serialise. db is a pool or connection with rights to create and drop tables
// in the schema (the DBA's or migration role).
func (w *Writer) Maintain(ctx context.Context, db sql.DBTX, opts MaintainOptions) ([]MaintainAction, error) {
	if opts.Retention == 0 {
		opts.Retention = 7 * 24 * time.Hour
	}
	if opts.Premake == 0 {
		opts.Premake = 3
	}
	if opts.Retention < time.Hour || opts.Premake < 0 {
		return nil, fmt.Errorf("outbox: maintain: retention %s must be at least 1h and premake %d not negative", opts.Retention, opts.Premake)
	}
	rows, err := w.q.Maintain(ctx, w.db(db), sql.MaintainParams{
		Retention: pgtype.Interval{Microseconds: opts.Retention.Microseconds(), Valid: true},
		Premake:   int32(opts.Premake),
		Now:       opts.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: maintain: %w", err)
	}
	out := make([]MaintainAction, len(rows))
	for i, r := range rows {
		out[i] = MaintainAction{Action: r.Action, Object: r.Object}
	}
	return out, nil
}
