package relay_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/envelope"
)

// TestRelayRoutesAndDelivers relays events, records and a fan-out row with
// their envelope headers, then stops cleanly and confirms what it committed.
func TestRelayRoutesAndDelivers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	fan := b.k.Topic("relay-fanout", 1, nil)

	id1, id2, id3 := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	p1, _ := json.Marshal(payload{Agg: "o-1", Seq: 0})
	p2, _ := json.Marshal(payload{Agg: "o-1", Seq: 1})
	err := pgx.BeginFunc(ctx, b.conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload, headers, fanout_topics)
			VALUES ($1, 'Order', 'o-1', 'order.created', $2, '{"correlation_id":"c-1","traceparent":"00-abc-def-01"}', ARRAY[$3::text])`, id1, p1, fan); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload)
			VALUES ($1, 'Order', 'o-1', 'order.paid', $2)`, id2, p2)
		return err
	})
	require.NoError(t, err)
	_, err = b.conn.Exec(ctx, `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, kind, payload)
		VALUES ($1, 'Customer', 'c-9', 'customer.state', 'record', '{"name":"x"}')`, id3)
	require.NoError(t, err)

	stop := runRelay(t, b.config(t))
	recs := b.waitRelayed(t, 2, 30*time.Second)
	require.Len(t, recs, 2)
	r := recs[0]
	require.Equal(t, id1.String(), header(r, envelope.HeaderEventID))
	require.Equal(t, "o-1", string(r.Key))
	require.Equal(t, "Order", header(r, envelope.HeaderAggregateType))
	require.Equal(t, "order.created", header(r, envelope.HeaderEventType))
	require.Equal(t, envelope.KindEvent, header(r, envelope.HeaderKind))
	require.Equal(t, "application/json", header(r, envelope.HeaderContentType))
	require.Equal(t, "c-1", header(r, envelope.HeaderCorrelationID))
	require.Equal(t, "00-abc-def-01", header(r, envelope.HeaderTraceparent))
	require.NotEmpty(t, header(r, envelope.HeaderSourceLSN))
	require.NotEmpty(t, header(r, envelope.HeaderSourceXID))
	_, err = time.Parse(time.RFC3339Nano, header(r, envelope.HeaderOccurredAt))
	require.NoError(t, err)
	require.Equal(t, header(r, envelope.HeaderSourceLSN), header(recs[1], envelope.HeaderSourceLSN), "one Postgres transaction, one source LSN")

	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fanned, err := b.k.ReadCommitted(fctx, fan)
	require.NoError(t, err)
	require.Len(t, fanned, 1)
	require.Equal(t, id1.String(), header(fanned[0], envelope.HeaderEventID))
	records, err := b.k.ReadCommitted(fctx, b.recordTopic)
	require.NoError(t, err)
	require.Len(t, records, 1)
	require.Equal(t, "c-9", string(records[0].Key))
	require.Equal(t, envelope.KindRecord, header(records[0], envelope.HeaderKind))

	require.ErrorIs(t, stop(), context.Canceled)
	// Only what committed is confirmed, and all of it was: the slot is past
	// the last relayed transaction.
	var confirmed bool
	require.NoError(t, b.conn.QueryRow(ctx, `SELECT confirmed_flush_lsn > $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
		b.slot, header(recs[1], envelope.HeaderSourceLSN)).Scan(&confirmed))
	require.True(t, confirmed, "slot not confirmed past the relayed transaction")
}
