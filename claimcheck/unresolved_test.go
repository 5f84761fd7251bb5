package claimcheck_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/eos"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/outbox"
	"github.com/outboxrelay/outbox/sink"
)

// danglingRecord is an event whose reference names a payload the store does
// not hold (pruned, or its writer's transaction rolled back).
func danglingRecord(topic string) *kgo.Record {
	id := uuid.Must(uuid.NewV7())
	ref := claimcheck.NewRef("pg:"+id.String(), []byte("gone"))
	rec := &kgo.Record{Topic: topic, Key: []byte("o-1"), Value: ref.Stub(), Headers: []kgo.RecordHeader{
		{Key: envelope.HeaderEventID, Value: []byte(id.String())},
		{Key: envelope.HeaderEventType, Value: []byte("order.attachment_added")},
	}}
	for k, v := range ref.Headers() {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	return rec
}

func deadLetterOf(r *kgo.Record) envelope.DeadLetter {
	hs := make([]envelope.Header, len(r.Headers))
	for i, h := range r.Headers {
		hs[i] = envelope.Header(h)
	}
	return envelope.ParseDeadLetter(hs)
}

// TestUnresolvableReference: eos dead-letters a record whose payload is
// missing in the same transaction, without calling the transform; the sink
// retries it without calling the API, then dead-letters it. Both dead
// letters keep the reference, and say why.
func TestUnresolvableReference(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	b := setup(t, outbox.Config{})
	resolver := claimcheck.NewResolver(b.store)
	k := kafkatest.New(t)
	in := k.Topic("cc-dangling-in", 1, nil)
	out := k.Topic("cc-dangling-out", 1, nil)
	dlq := k.Topic("cc-dangling-dlq", 1, nil)
	apiIn := k.Topic("cc-dangling-api", 1, nil)

	cl, err := kgo.NewClient(k.Opts()...)
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(ctx, danglingRecord(in), danglingRecord(apiIn)).FirstErr())

	var transformed atomic.Int32
	stage, err := eos.New(eos.Config{
		KafkaOpts: k.Opts(), Group: "cc-" + in, InputTopics: []string{in}, OutputTopic: out,
		DeadLetterTopic: dlq, TransactionalID: "cc-" + in, ClaimCheck: resolver, Logger: logger,
		Transform: func(_ context.Context, r *kgo.Record) ([]*kgo.Record, error) {
			transformed.Add(1)
			return []*kgo.Record{{Value: r.Value}}, nil
		},
	})
	require.NoError(t, err)
	require.NoError(t, stage.Start(ctx))
	defer func() { require.NoError(t, stage.Stop(context.Background())) }()

	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { calls.Add(1) }))
	defer api.Close()
	reqb, err := sink.NewTemplateRequest(sink.RequestTemplate{URL: api.URL + "/{{.ID}}"})
	require.NoError(t, err)
	s, err := sink.New(sink.Config{
		Pool: b.pool, KafkaOpts: k.Opts(), Group: "cc-sink-" + apiIn, ClaimCheck: resolver, Logger: logger,
		CommitInterval: 100 * time.Millisecond, StatusInterval: time.Second,
		Endpoints: []sink.Endpoint{{Name: "api", Topics: []string{apiIn}, Request: reqb, Idempotent: true, Mode: sink.ModeOrdered,
			Retry: sink.RetryPolicy{Retries: 2, Initial: 20 * time.Millisecond, Jitter: -1}}},
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 30*time.Second)
		defer c()
		require.NoError(t, s.Stop(sctx))
	}()

	var dead, sinkDead []*kgo.Record
	require.Eventually(t, func() bool {
		dead, _ = k.ReadCommitted(ctx, dlq)
		sinkDead, _ = k.ReadCommitted(ctx, apiIn+".dlt")
		return len(dead) == 1 && len(sinkDead) == 1
	}, 45*time.Second, 100*time.Millisecond)

	d := deadLetterOf(dead[0])
	require.Equal(t, "claim_check", d.ErrorClass)
	require.Contains(t, d.ErrorMessage, "not found")
	require.Zero(t, transformed.Load(), "the transform never saw the stub")
	_, ok, err := claimcheck.FromHeaders(func(k string) (string, bool) {
		for _, h := range dead[0].Headers {
			if h.Key == k {
				return string(h.Value), true
			}
		}
		return "", false
	})
	require.NoError(t, err)
	require.True(t, ok, "the dead letter keeps the reference")

	sd := deadLetterOf(sinkDead[0])
	require.Equal(t, "claim_check", sd.ErrorClass)
	require.Contains(t, sd.ErrorMessage, "not found")
	require.Equal(t, 3, sd.Attempt, "first attempt plus two retries")
	require.Zero(t, calls.Load(), "no call without the payload")
}
