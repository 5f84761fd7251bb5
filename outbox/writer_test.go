package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
)

type testBundle struct {
	pool   *pgxpool.Pool
	writer *outbox.Writer
	url    string
}

func setup(t *testing.T, cfg outbox.Config) *testBundle {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	m, err := migrations.Open(ctx, url, "", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	pcfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	pcfg.MaxConns = 60
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `CREATE TABLE orders (id text PRIMARY KEY, amount_cents bigint NOT NULL)`)
	require.NoError(t, err)
	w, err := outbox.New(cfg)
	require.NoError(t, err)
	return &testBundle{pool: pool, writer: w, url: url}
}

func (b *testBundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

func orderCreated(id string) outbox.Event {
	return outbox.Event{
		AggregateType: "order",
		AggregateID:   id,
		EventType:     "order.created",
		Payload:       []byte(fmt.Sprintf(`{"order_id":%q,"amount_cents":1299}`, id)),
	}
}

func TestCommitWritesBusinessRowEventsAndKeyTogether(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()

	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx = trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled}))
	ctx = outbox.WithCorrelationID(ctx, "req-42")

	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	key := outbox.Key{Key: "k-1"}
	claim, err := b.writer.ClaimKey(ctx, tx, key, outbox.Fingerprint([]byte("POST"), []byte("/orders"), []byte("{}")))
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	_, err = tx.Exec(ctx, `INSERT INTO orders VALUES ('A-1', 1299)`)
	require.NoError(t, err)
	ids, err := b.writer.Write(ctx, tx, orderCreated("A-1"), outbox.Event{
		AggregateType: "order", AggregateID: "A-1", EventType: "order.snapshot", Kind: outbox.KindRecord,
		Topic: "orders.state", FanoutTopics: []string{"audit.orders"}, Payload: []byte(`{"state":"new"}`),
		Headers: map[string]string{"tenant": "acme"},
	})
	require.NoError(t, err)
	require.Len(t, ids, 2)
	require.Equal(t, uuid.Version(7), ids[0].Version())
	require.NoError(t, b.writer.CompleteKey(ctx, tx, key, outbox.Response{StatusCode: 201, Body: []byte(`{"id":"A-1"}`)}))
	require.NoError(t, tx.Commit(ctx))

	require.Equal(t, 1, b.count(t, "orders"))
	require.Equal(t, 2, b.count(t, "outbox.events"))
	require.Equal(t, 1, b.count(t, "outbox.idempotency_keys"))

	var (
		kind, topic string
		fanout      []string
		headers     map[string]string
	)
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT kind, topic, fanout_topics, headers FROM outbox.events WHERE event_id = $1`, ids[1]).
		Scan(&kind, &topic, &fanout, &headers))
	require.Equal(t, "record", kind)
	require.Equal(t, "orders.state", topic)
	require.Equal(t, []string{"audit.orders"}, fanout)
	require.Equal(t, "acme", headers["tenant"])
	require.Equal(t, "req-42", headers[envelope.HeaderCorrelationID])
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", headers[envelope.HeaderTraceparent])
}

func TestRollbackWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.writer.ClaimKey(ctx, tx, outbox.Key{Key: "k"}, "fp")
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO orders VALUES ('A-1', 1)`)
	require.NoError(t, err)
	_, err = b.writer.Write(ctx, tx, orderCreated("A-1"))
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))

	require.Zero(t, b.count(t, "orders"))
	require.Zero(t, b.count(t, "outbox.events"))
	require.Zero(t, b.count(t, "outbox.idempotency_keys"))

	// The key is free again after the rollback.
	tx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	claim, err := b.writer.ClaimKey(ctx, tx, outbox.Key{Key: "k"}, "fp")
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	require.NoError(t, tx.Rollback(ctx))
}

// TestConcurrentClaimsHaveOneWinner: 50 requests with one key at once. One
// does the work; the rest are told it is in flight, or, once it committed, get
// its response replayed. Exactly one order and one event exist afterwards.
func TestConcurrentClaimsHaveOneWinner(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	key := outbox.Key{Scope: "customer-7", Key: "checkout-1"}
	fp := outbox.Fingerprint([]byte("POST /orders"), []byte(`{"sku":"x"}`))

	var (
		mu                        sync.Mutex
		winners, inFlight, replay int
		start                     = make(chan struct{})
		wg                        sync.WaitGroup
	)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tx, err := b.pool.Begin(ctx)
			if !assertNoError(t, err) {
				return
			}
			defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
			claim, err := b.writer.ClaimKey(ctx, tx, key, fp)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, outbox.ErrKeyInFlight):
				inFlight++
			case err != nil:
				t.Errorf("goroutine %d: %v", i, err)
			case claim.Replay != nil:
				replay++
				if claim.Replay.StatusCode != 201 || string(claim.Replay.Body) != `{"id":"A-1"}` {
					t.Errorf("replayed %d %s", claim.Replay.StatusCode, claim.Replay.Body)
				}
			default:
				winners++
				mu.Unlock()
				// Hold the claim a while so others arrive during it.
				time.Sleep(200 * time.Millisecond)
				_, err = tx.Exec(ctx, `INSERT INTO orders VALUES ('A-1', 1)`)
				if err == nil {
					_, err = b.writer.Write(ctx, tx, orderCreated("A-1"))
				}
				if err == nil {
					err = b.writer.CompleteKey(ctx, tx, key, outbox.Response{StatusCode: 201, Body: []byte(`{"id":"A-1"}`)})
				}
				if err == nil {
					err = tx.Commit(ctx)
				}
				mu.Lock()
				assertNoError(t, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	require.Equal(t, 1, winners)
	require.Equal(t, 50, winners+inFlight+replay)
	require.Positive(t, inFlight, "claims made while the winner worked must be told it is in flight")
	require.Equal(t, 1, b.count(t, "orders"))
	require.Equal(t, 1, b.count(t, "outbox.events"))

	// After the winner committed, every retry replays.
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	claim, err := b.writer.ClaimKey(ctx, tx, key, fp)
	require.NoError(t, err)
	require.NotNil(t, claim.Replay)
	require.Equal(t, 201, claim.Replay.StatusCode)
}

func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestKeyReusedWithOtherRequestIsMismatch(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	key := outbox.Key{Key: "k"}
	commitClaim(t, b, key, "fp-1", 201)

	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = b.writer.ClaimKey(ctx, tx, key, "fp-2")
	require.ErrorIs(t, err, outbox.ErrKeyMismatch)

	// The same key in another scope is another key.
	claim, err := b.writer.ClaimKey(ctx, tx, outbox.Key{Scope: "other", Key: "k"}, "fp-2")
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
}

func TestCommittedWithoutResponseIsInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.writer.ClaimKey(ctx, tx, outbox.Key{Key: "k"}, "fp")
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	tx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = b.writer.ClaimKey(ctx, tx, outbox.Key{Key: "k"}, "fp")
	require.ErrorIs(t, err, outbox.ErrKeyInFlight)
	require.ErrorIs(t, b.writer.CompleteKey(ctx, tx, outbox.Key{Key: "never-claimed"}, outbox.Response{StatusCode: 200}), outbox.ErrKeyNotClaimed)
}

func TestKeysExpire(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{KeyTTL: time.Second})
	ctx := context.Background()
	key := outbox.Key{Key: "k"}
	commitClaim(t, b, key, "fp-1", 201)
	time.Sleep(1100 * time.Millisecond)

	// Expired: the key is claimable again, even with another fingerprint.
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	claim, err := b.writer.ClaimKey(ctx, tx, key, "fp-2")
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
}

func TestInvalidKey(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = b.writer.ClaimKey(ctx, tx, outbox.Key{}, "fp")
	require.ErrorIs(t, err, outbox.ErrInvalidKey)
	_, err = b.writer.ClaimKey(ctx, tx, outbox.Key{Key: strings.Repeat("k", 256)}, "fp")
	require.ErrorIs(t, err, outbox.ErrInvalidKey)
}

func commitClaim(t *testing.T, b *testBundle, key outbox.Key, fp string, code int) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	claim, err := b.writer.ClaimKey(ctx, tx, key, fp)
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	require.NoError(t, b.writer.CompleteKey(ctx, tx, key, outbox.Response{StatusCode: code}))
	require.NoError(t, tx.Commit(ctx))
}

// TestValidationWritesNothing: each invalid event is refused with its sentinel
// before any SQL, in a batch with valid events, and the transaction stays usable.
func TestValidationWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{MaxPayloadBytes: 1024, MaxHeaderBytes: 256})
	v7 := uuid.Must(uuid.NewV7())
	cases := []struct {
		name string
		mod  func(*outbox.Event)
		want error
	}{
		{"missing aggregate type", func(e *outbox.Event) { e.AggregateType = "" }, outbox.ErrMissingAggregateType},
		{"blank aggregate id", func(e *outbox.Event) { e.AggregateID = "  " }, outbox.ErrMissingAggregateID},
		{"missing event type", func(e *outbox.Event) { e.EventType = "" }, outbox.ErrMissingEventType},
		{"payload over limit", func(e *outbox.Event) { e.Payload = []byte(`"` + strings.Repeat("x", 1100) + `"`) }, outbox.ErrPayloadTooLarge},
		{"invalid json", func(e *outbox.Event) { e.Payload = []byte(`{"order_id":`) }, outbox.ErrInvalidJSON},
		{"invalid +json", func(e *outbox.Event) { e.ContentType = "application/cloudevents+json"; e.Payload = []byte(`nope`) }, outbox.ErrInvalidJSON},
		{"headers too large", func(e *outbox.Event) { e.Headers = map[string]string{"big": strings.Repeat("h", 300)} }, outbox.ErrHeadersTooLarge},
		{"invalid topic", func(e *outbox.Event) { e.Topic = "orders/created" }, outbox.ErrInvalidTopic},
		{"invalid fanout topic", func(e *outbox.Event) { e.FanoutTopics = []string{""} }, outbox.ErrInvalidTopic},
		{"invalid kind", func(e *outbox.Event) { e.Kind = "snapshot" }, outbox.ErrInvalidKind},
		{"uuid v4 id", func(e *outbox.Event) { e.ID = uuid.New() }, outbox.ErrInvalidEventID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			tx, err := b.pool.Begin(ctx)
			require.NoError(t, err)
			defer tx.Rollback(ctx) //nolint:errcheck
			bad := orderCreated("A-1")
			tc.mod(&bad)
			_, err = b.writer.Write(ctx, tx, orderCreated("A-0"), bad)
			require.ErrorIs(t, err, tc.want)
			var verr *outbox.ValidationError
			require.ErrorAs(t, err, &verr)
			require.Equal(t, 1, verr.Index)
			// The transaction is still usable and nothing was written.
			require.NoError(t, tx.Commit(ctx))
			require.Zero(t, b.count(t, "outbox.events"))
		})
	}

	// Binary payloads skip the JSON check; a caller-supplied UUIDv7 is kept.
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	e := orderCreated("A-2")
	e.ContentType, e.Payload, e.ID = "application/x-protobuf", []byte{0xff, 0x00}, v7
	ids, err := b.writer.Write(ctx, tx, e)
	require.NoError(t, err)
	require.Equal(t, v7, ids[0])
	require.NoError(t, tx.Commit(ctx))
	var payload []byte
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT payload FROM outbox.events WHERE event_id = $1`, v7).Scan(&payload))
	require.Equal(t, []byte{0xff, 0x00}, payload)

	_, err = b.writer.Write(ctx, nil)
	require.ErrorIs(t, err, outbox.ErrNoEvents)
}

func TestEventsAreInsertOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.writer.Write(ctx, tx, orderCreated("A-1"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	_, err = b.pool.Exec(ctx, `UPDATE outbox.events SET event_type = 'x'`)
	require.ErrorContains(t, err, "insert-only")
}

func TestBatchWriteInOneStatement(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	events := make([]outbox.Event, 1000)
	for i := range events {
		events[i] = orderCreated(fmt.Sprintf("A-%d", i))
	}
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	ids, err := b.writer.Write(ctx, tx, events...)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Len(t, ids, 1000)
	require.Equal(t, 1000, b.count(t, "outbox.events"))
	// One write is one correlation when the request carried none.
	var correlations int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(DISTINCT headers->>'correlation_id') FROM outbox.events`).Scan(&correlations))
	require.Equal(t, 1, correlations)
	var first string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT headers->>'correlation_id' FROM outbox.events LIMIT 1`).Scan(&first))
	require.Equal(t, ids[0].String(), first)
}

// TestMaintainPartitions: an event from a day without a partition lands in the
// default partition (the insert never fails), maintain moves it into its day,
// and days past retention are dropped whole.
func TestMaintainPartitions(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	future := time.Now().UTC().AddDate(0, 0, 20)
	id := v7At(future)

	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	e := orderCreated("A-1")
	e.ID = id
	_, err = b.writer.Write(ctx, tx, e)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 1, b.count(t, "outbox.events_default"))

	actions, err := b.writer.Maintain(ctx, b.pool, outbox.MaintainOptions{Now: &future})
	require.NoError(t, err)
	dayName := "events_p" + future.Format("20060102")
	require.Contains(t, fmt.Sprint(actions), dayName+" (moved 1 rows from events_default)")
	require.Zero(t, b.count(t, "outbox.events_default"))
	require.Equal(t, 1, b.count(t, "outbox."+dayName))
	// Today's partition is 20 days old from there: past 7 days' retention.
	require.Contains(t, fmt.Sprint(actions), "dropped events_p"+time.Now().UTC().Format("20060102"))

	// A second run with nothing to do does nothing.
	actions, err = b.writer.Maintain(ctx, b.pool, outbox.MaintainOptions{Now: &future})
	require.NoError(t, err)
	require.Empty(t, actions)
}

// v7At returns a UUIDv7 whose timestamp is t.
func v7At(t time.Time) uuid.UUID {
	id := uuid.Must(uuid.NewV7())
	ms := uint64(t.UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (40 - 8*i))
	}
	return id
}
