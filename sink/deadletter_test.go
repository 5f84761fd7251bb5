package sink

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/sql"
)

// TestUnknownWithoutLookupIsDeadLettered: a row left in_flight by a dead
// instance, on an endpoint that does not honour keys and has no status
// lookup, goes to the dead-letter topic for a person; it is never called.
func TestUnknownWithoutLookupIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ids := b.produce(2, 2)
	// A dead instance (owner 4242 holds no lock) claimed the first event.
	_, err := sql.New().LedgerClaimNew(context.Background(), sql.InSchema(b.pool, "outbox"), sql.LedgerClaimNewParams{
		Endpoint: "api", EventID: ids[0], IdempotencyKey: ids[0].String(), Topic: b.topic, Owner: 4242,
	})
	require.NoError(t, err)
	s := b.start(b.config("unknown", b.endpoint(false)))
	c := b.waitSettled(30*time.Second, StatusSucceeded, StatusDeadLettered)
	require.Equal(t, 1, c[StatusDeadLettered])
	requests, _ := b.api.snapshot()
	require.Zero(t, requests[ids[0].String()], "an unknown outcome is never re-called blindly")
	require.Equal(t, 1, requests[ids[1].String()])
	recs, err := b.kafka.ReadCommitted(context.Background(), b.topic+".dlt")
	require.NoError(t, err)
	require.Len(t, recs, 1)
	dl := envelope.ParseDeadLetter(headers(recs[0]))
	require.Equal(t, "unknown_outcome", dl.ErrorClass)
	require.Len(t, dl.History, 1)
	require.Contains(t, dl.History[0].Error, "indeterminate")
	require.Equal(t, 1.0, testutilValue(s, "dead_lettered"))
}

// TestMissingEventIDIsDeadLettered: a record without an event_id cannot be
// deduplicated, so it is never called.
func TestMissingEventIDIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	cl, err := kgo.NewClient(append(b.kafka.Opts(), kgo.DefaultProduceTopic(b.topic))...)
	require.NoError(t, err)
	require.NoError(t, cl.ProduceSync(context.Background(), &kgo.Record{Key: []byte("k"), Value: []byte(`{}`)}).FirstErr())
	cl.Close()
	b.start(b.config("noid", b.endpoint(true)))
	require.Eventually(t, func() bool {
		recs, err := b.kafka.ReadCommitted(context.Background(), b.topic+".dlt")
		return err == nil && len(recs) == 1 && envelope.ParseDeadLetter(headers(recs[0])).ErrorClass == "missing_event_id"
	}, 30*time.Second, 200*time.Millisecond)
	requests, _ := b.api.snapshot()
	require.Empty(t, requests)
}

func headers(r *kgo.Record) []envelope.Header {
	hs := make([]envelope.Header, len(r.Headers))
	for i, h := range r.Headers {
		hs[i] = envelope.Header(h)
	}
	return hs
}
