package relay_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/testkit/registrytest"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/schema"
)

// TestSchemaMismatchStopsThenDeadLetters: a relay writing the Confluent
// wire format meets a row (from the SQL path) whose payload does not match
// its schema. Without a schema dead-letter topic it relays what came
// before, then stops with ErrSchemaMismatch naming the event, which stays
// in the slot. Restarted with one, it moves that event there, as written,
// with the reason, and goes on: every row reaches Kafka exactly once.
func TestSchemaMismatchStopsThenDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, etype := registrytest.Wire(ctx, t, "relay.paid", `{"type":"record","name":"Paid","fields":[
		{"name":"order_id","type":"string"},{"name":"amount_cents","type":"long"}]}`)

	insert := func(id, payload string) string {
		var eventID string
		require.NoError(t, b.conn.QueryRow(ctx, `INSERT INTO outbox.events (aggregate_type, aggregate_id, event_type, payload)
			VALUES ('order', $1, $2, $3) RETURNING event_id::text`, id, etype, []byte(payload)).Scan(&eventID))
		return eventID
	}
	insert("o-1", `{"order_id":"o-1","amount_cents":100}`)
	bad := insert("o-2", `{"order_id":"o-2","amount_cents":"a lot"}`)
	insert("o-3", `{"order_id":"o-3","amount_cents":300}`)

	cfg := b.config(t)
	cfg.Encoder = w
	r, err := relay.New(cfg)
	require.NoError(t, err)
	runErr := r.Run(ctx)
	require.ErrorIs(t, runErr, relay.ErrSchemaMismatch)
	var ve *schema.ValidationError
	require.True(t, errors.As(runErr, &ve), "the schema's verdict is in the error: %v", runErr)
	require.Contains(t, runErr.Error(), bad)
	require.Contains(t, runErr.Error(), "--schema-dead-letter")
	t.Logf("the relay stopped: %v", runErr)
	recs := b.readAll(t, 1, 5*time.Second)
	require.Len(t, recs, 1, "what came before the bad event was relayed, nothing after it")

	dlt := b.k.Topic("relay-schema-dlt", 1, nil)
	cfg.SchemaDeadLetterTopic = dlt
	stop := runRelay(t, cfg)
	b.waitRelayed(t, 2, time.Minute)
	insert("o-4", `{"order_id":"o-4","amount_cents":400}`)
	recs = b.waitRelayed(t, 3, time.Minute)
	require.ErrorIs(t, stop(), context.Canceled, "a clean stop")
	require.Len(t, recs, 3)
	for i, rec := range recs {
		require.Equal(t, byte(0), rec.Value[0], "record %d is in the wire format", i)
		back, decoded, err := w.Decode(ctx, rec.Value)
		require.NoError(t, err)
		require.True(t, decoded)
		require.Contains(t, string(back), `"order_id":"`+string(rec.Key)+`"`)
	}
	dead, err := b.k.ReadCommitted(ctx, dlt)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, bad, header(dead[0], "event_id"))
	require.JSONEq(t, `{"order_id":"o-2","amount_cents":"a lot"}`, string(dead[0].Value))
	require.Contains(t, header(dead[0], relay.HeaderSchemaError), "amount_cents")
}
