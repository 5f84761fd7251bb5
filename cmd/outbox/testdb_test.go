package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
)

// migratedDatabase is a fresh database on the test binary's Postgres with
// the outbox migrations applied, in schema outbox.
func migratedDatabase(ctx context.Context, t *testing.T) string {
	t.Helper()
	url := pgtest.NewDatabase(t)
	m, err := migrations.Open(ctx, url, "outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	return url
}

// rowQuerier is a *pgx.Conn or a *pgxpool.Pool.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// waitSlotActive waits until relay holds slot: rows committed before the
// slot exists are not in its stream, so a test writes only after this.
func waitSlotActive(ctx context.Context, t *testing.T, db rowQuerier, relay *stage, slot string) {
	t.Helper()
	eventually(t, time.Minute, "relay holds slot "+slot, func() error {
		relay.running(t)
		var active bool
		if err := db.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active); err != nil {
			return err
		}
		if !active {
			return errors.New("slot exists, not active yet")
		}
		return nil
	})
}
