package claimcheck_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/eos"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/outbox"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/sink"
)

// received is what the test API got: the body of each call by event id.
type received struct {
	mu     sync.Mutex
	bodies map[string][]byte
}

func (r *received) get(id string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bodies[id]
}

// TestLargePayloadEndToEnd: a 20 MiB payload goes writer -> relay -> eos ->
// sink by reference and reaches the HTTP API whole (same sha256), while every
// Kafka record on the way stays small. The same test runs on Apache Kafka
// with OUTBOX_TEST_KAFKA=apache.
func TestLargePayloadEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	b := setup(t, outbox.Config{})
	k := kafkatest.New(t)
	source := k.Topic("cc-orders", 1, nil)
	commands := k.Topic("cc-commands", 1, nil)
	checkpoint := k.Topic("cc-ckpt", 1, map[string]string{"cleanup.policy": "compact"})
	transformDLQ := k.Topic("cc-transform-dlq", 1, nil)
	slot := fmt.Sprintf("cc_%d_%08x", os.Getpid(), rand.Uint32())
	_, err := b.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	require.NoError(t, err)

	// The writer: 20 MiB of attachment in the order's transaction.
	payload := make([]byte, 20<<20)
	for i := range payload {
		payload[i] = byte(rand.Uint32())
	}
	want := sha256.Sum256(payload)
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	ids, err := b.writer.Write(ctx, tx, bigEvent(payload))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	id := ids[0].String()

	// The relay streams the small row to Kafka.
	r, err := relay.New(relay.Config{
		DatabaseURL: b.url, Schema: "outbox", Slot: slot, KafkaOpts: k.Opts(),
		CheckpointTopic: checkpoint, TopicTemplate: source, HeartbeatInterval: 500 * time.Millisecond,
		StandbyPollInterval: 100 * time.Millisecond, RetryBackoff: 100 * time.Millisecond, Logger: logger,
	})
	require.NoError(t, err)
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- r.Run(relayCtx) }()
	defer func() { stopRelay(); <-relayDone }()

	resolver := claimcheck.NewResolver(b.store)

	// eos: an identity transform; it sees the whole payload.
	var seen [32]byte
	var seenMu sync.Mutex
	stage, err := eos.New(eos.Config{
		KafkaOpts: k.Opts(), Group: "cc-" + source, InputTopics: []string{source}, OutputTopic: commands,
		DeadLetterTopic: transformDLQ, TransactionalID: "cc-" + source, ClaimCheck: resolver, Logger: logger,
		Transform: func(_ context.Context, r *kgo.Record) ([]*kgo.Record, error) {
			seenMu.Lock()
			seen = sha256.Sum256(r.Value)
			seenMu.Unlock()
			for _, h := range r.Headers {
				if claimcheck.IsHeader(h.Key) {
					return nil, fmt.Errorf("transform sees claim-check header %s", h.Key)
				}
			}
			return []*kgo.Record{{Key: r.Key, Value: r.Value, Headers: r.Headers}}, nil
		},
	})
	require.NoError(t, err)
	require.NoError(t, stage.Start(ctx))
	defer func() { require.NoError(t, stage.Stop(context.Background())) }()

	// The sink calls the API with the resolved payload as the body.
	got := &received{bodies: map[string][]byte{}}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		got.mu.Lock()
		got.bodies[req.Header.Get("Idempotency-Key")] = body
		got.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer api.Close()
	reqb, err := sink.NewTemplateRequest(sink.RequestTemplate{URL: api.URL + "/attachments/{{.ID}}"})
	require.NoError(t, err)
	s, err := sink.New(sink.Config{
		Pool: b.pool, KafkaOpts: k.Opts(), Group: "cc-sink-" + commands, ClaimCheck: resolver, Logger: logger,
		CommitInterval: 100 * time.Millisecond, StatusInterval: time.Second,
		Endpoints: []sink.Endpoint{{Name: "api", Topics: []string{commands}, Request: reqb, Idempotent: true, Timeout: 30 * time.Second}},
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 30*time.Second)
		defer c()
		require.NoError(t, s.Stop(sctx))
	}()

	require.Eventually(t, func() bool { return got.get(id) != nil }, 90*time.Second, 100*time.Millisecond)
	body := got.get(id)
	require.Len(t, body, len(payload))
	require.Equal(t, want, sha256.Sum256(body), "the API received the exact 20 MiB")
	seenMu.Lock()
	require.Equal(t, want, seen, "the transform saw the exact 20 MiB")
	seenMu.Unlock()

	// Every record in Kafka carried the reference, not the payload.
	for _, topic := range []string{source, commands} {
		recs, err := k.ReadCommitted(ctx, topic)
		require.NoError(t, err)
		require.Len(t, recs, 1, topic)
		require.Less(t, len(recs[0].Value), 512, "%s: the record value stays small", topic)
		h := map[string]string{}
		for _, kv := range recs[0].Headers {
			h[kv.Key] = string(kv.Value)
		}
		ref, ok, err := claimcheck.FromMap(h)
		require.NoError(t, err)
		require.True(t, ok, topic)
		require.Equal(t, "pg:"+id, ref.URI)
		require.Equal(t, int64(len(payload)), ref.Size)
		require.True(t, bytes.Equal(ref.Stub(), recs[0].Value))
	}
	dead, err := k.ReadCommitted(ctx, transformDLQ)
	require.NoError(t, err)
	require.Empty(t, dead)
}
