package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	sqlc "github.com/outboxrelay/outbox/sql"
)

// heartbeatPrefix starts the prefix of the relay's logical messages.
const heartbeatPrefix = "outbox-relay:"

// heartbeat emits a non-transactional logical message every interval so the
// stream carries a position the relay may confirm even when no outbox row is
// written on a busy database, and refreshes the slot metrics. It returns
// ErrWALLost when the slot lost WAL, and nil when ctx ends.
func (r *Relay) heartbeat(ctx context.Context, conn *pgx.Conn) error {
	q := sqlc.New()
	t := time.NewTicker(r.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		lsn, err := q.RelayHeartbeat(qctx, conn, heartbeatPrefix+r.cfg.Slot)
		if err == nil {
			var slot sqlc.RelaySlotRow
			slot, err = q.RelaySlot(qctx, conn, r.cfg.Slot)
			if err == nil {
				r.m.retainedBytes.Set(float64(slot.RetainedBytes))
				if slot.WalStatus == "lost" {
					cancel()
					return fmt.Errorf("%w: slot %s", ErrWALLost, r.cfg.Slot)
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.log.WarnContext(ctx, "relay: heartbeat failed", slog.Any("error", err))
			if conn.IsClosed() {
				return fmt.Errorf("relay: heartbeat connection: %w", err)
			}
			continue
		}
		r.log.DebugContext(ctx, "relay: heartbeat", slog.String("lsn", lsn))
	}
}
