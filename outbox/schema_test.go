package outbox_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/outbox"
	"github.com/outboxrelay/outbox/schema"
)

// TestSchemaMismatchWritesNothing: with Config.Schemas, an event whose
// payload does not match its type's schema (the repository's schemas
// folder: order.created) fails Write, Batch.Write and ClaimAndWrite with a
// *ValidationError that names the schema version and the field, before any
// statement: committing the transaction afterwards leaves no event, no key
// and none of the write's other events. Types without a schema pass.
func TestSchemaMismatchWritesNothing(t *testing.T) {
	t.Parallel()
	set, err := schema.Load(os.DirFS("../schemas"))
	require.NoError(t, err)
	b := setup(t, outbox.Config{Schemas: set})
	ctx := context.Background()

	good := outbox.Event{AggregateType: "order", AggregateID: "A-1", EventType: "order.created",
		Payload: []byte(`{"order_id":"A-1","customer_id":"c-1","amount_cents":1299,"currency":"EUR"}`)}
	bad := good
	bad.Payload = []byte(`{"order_id":"A-1","customer_id":"c-1","amount_cents":"1299","currency":"EUR"}`)
	other := outbox.Event{AggregateType: "order", AggregateID: "A-1", EventType: "order.noted", Payload: []byte(`{"any":"shape"}`)}

	check := func(err error) {
		t.Helper()
		require.ErrorIs(t, err, outbox.ErrSchemaMismatch)
		var ve *outbox.ValidationError
		require.True(t, errors.As(err, &ve))
		require.Equal(t, "Payload", ve.Field)
		require.Equal(t, 1, ve.Index, "the second event of the write is the bad one")
		var se *schema.ValidationError
		require.True(t, errors.As(err, &se))
		require.Equal(t, "order.created", se.EventType)
		require.Contains(t, err.Error(), "amount_cents")
		require.Contains(t, err.Error(), "order.created v1 (JSON)")
	}

	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.writer.Write(ctx, tx, other, bad)
	check(err)
	batch := b.writer.NewBatch()
	_, err = batch.Write(ctx, other, bad)
	check(err)
	_, _, err = b.writer.ClaimAndWrite(ctx, tx, outbox.Key{Key: "k-1"}, "fp", &outbox.Response{StatusCode: 201}, other, bad)
	check(err)
	require.NoError(t, tx.Commit(ctx), "the caller's transaction is still usable: nothing was sent")
	require.Zero(t, b.count(t, "outbox.events"))
	require.Zero(t, b.count(t, "outbox.idempotency_keys"))

	tx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.writer.Write(ctx, tx, other, good)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 2, b.count(t, "outbox.events"))
}
