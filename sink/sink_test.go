package sink

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := New(Config{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	ep := testEndpoint("http://127.0.0.1:1", false)
	ep.Topics = []string{"orders"}
	cfg := Config{DatabaseURL: "postgres://x", KafkaOpts: nil, Group: "g", Endpoints: []Endpoint{ep}}
	_, err = New(cfg)
	require.ErrorIs(t, err, ErrInvalidConfig, "KafkaOpts required")
	bad := ep
	bad.Retry.Jitter = 2
	_, err = New(Config{DatabaseURL: "postgres://x", KafkaOpts: testOpts, Group: "g", Endpoints: []Endpoint{bad}})
	require.ErrorIs(t, err, ErrInvalidConfig)
	bad = ep
	bad.Mode = "sideways"
	_, err = New(Config{DatabaseURL: "postgres://x", KafkaOpts: testOpts, Group: "g", Endpoints: []Endpoint{bad}})
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = New(Config{DatabaseURL: "postgres://x", KafkaOpts: testOpts, Group: "g", Endpoints: []Endpoint{ep, ep}})
	require.ErrorIs(t, err, ErrInvalidConfig, "two endpoints, one name")

	s, err := New(Config{DatabaseURL: "postgres://x", KafkaOpts: testOpts, Group: "g", Endpoints: []Endpoint{ep}})
	require.NoError(t, err)
	e := s.cfg.Endpoints[0]
	require.Equal(t, 5, e.Retry.Retries)
	require.Equal(t, 0, e.Retry.PermanentRetries)
	require.Equal(t, time.Second, e.Retry.Initial)
	require.Equal(t, ModeRetryTopics, e.Mode)
	require.Equal(t, []string{"orders", "orders.retry.1s", "orders.retry.10s", "orders.retry.1m"}, s.topics)
	require.Equal(t, "orders.dlt", e.deadLetterTopic("orders"))
	// Stop before Start is fine, twice too.
	require.NoError(t, s.Stop(context.Background()))
	require.NoError(t, s.Stop(context.Background()))
	require.ErrorIs(t, s.Start(context.Background()), ErrStopped)
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	r := RetryPolicy{Initial: 100 * time.Millisecond, Multiplier: 2, Max: time.Second, Jitter: 0.2}
	require.NoError(t, r.validate())
	for n := 1; n <= 6; n++ {
		want := min(time.Duration(float64(100*time.Millisecond)*float64(int(1)<<(n-1))), time.Second)
		for range 200 {
			got := r.backoff(n, 0)
			require.LessOrEqual(t, got, want)
			require.GreaterOrEqual(t, got, time.Duration(float64(want)*0.8))
		}
	}
	require.Equal(t, time.Second, r.backoff(1, 5*time.Second), "Retry-After is capped at Max")
	require.Equal(t, 700*time.Millisecond, r.backoff(1, 700*time.Millisecond), "Retry-After wins over a shorter backoff")
	require.Equal(t, 2*time.Second, parseRetryAfter("2", time.Now()))
	require.Equal(t, "orders.retry.1m", RetryTopic("orders", time.Minute))
	require.Equal(t, "orders.retry.250ms", RetryTopic("orders", 250*time.Millisecond))
	require.Equal(t, time.Second, (&RetryPolicy{Tiers: []time.Duration{time.Second, 10 * time.Second}}).tierFor(5*time.Second))
	require.Equal(t, time.Second, (&RetryPolicy{Tiers: []time.Duration{time.Second, 10 * time.Second}}).tierFor(time.Millisecond))
}

// TestCallsOncePerEvent: the happy path, with the headers every call carries
// and a second sink group replaying the topic making no call at all.
func TestCallsOncePerEvent(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	b.produce(60, 7)
	cfg := b.config("g1", b.endpoint(false))
	cfg.Registerer = prometheus.NewRegistry()
	s := b.start(cfg)
	c := b.waitSettled(30*time.Second, StatusSucceeded)
	require.Equal(t, 60, c[StatusSucceeded])
	requests, performed := b.api.snapshot()
	for _, id := range b.events {
		require.Equal(t, 1, requests[id.String()], id)
		require.Equal(t, 1, performed[id.String()], id)
	}
	b.api.mu.Lock()
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", b.api.traceparents[b.events[0].String()])
	b.api.mu.Unlock()
	require.Equal(t, 60.0, testutil.ToFloat64(s.metrics.calls.WithLabelValues("api", "succeeded")))

	// Replaying the topic in another group makes no call: the ledger has them.
	b.start(b.config("g2", b.endpoint(false)))
	time.Sleep(2 * time.Second)
	requests, _ = b.api.snapshot()
	for _, id := range b.events {
		require.Equal(t, 1, requests[id.String()])
	}

	// The ledger gauge and Status agree.
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(s.metrics.ledgerRows.WithLabelValues("api", StatusSucceeded)) == 60
	}, 5*time.Second, 50*time.Millisecond)
	st, err := Status(context.Background(), b.pool, "outbox", time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	require.Equal(t, []StatusCount{{Endpoint: "api", Status: StatusSucceeded, Rows: 60}}, st)

	// Every attempt row records the response.
	att, err := newLedger(b.pool, "outbox").history(context.Background(), &Endpoint{Name: "api"}, b.events[0])
	require.NoError(t, err)
	require.Len(t, att, 1)
	require.Equal(t, 200, att[0].Status)
}
