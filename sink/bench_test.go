package sink

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
)

// BenchmarkLedgerOverhead measures what the ledger adds to each call: the
// claim transaction before it and the record transaction after it, against a
// local server that answers at once. Reports p50/p99 of claim+record.
func BenchmarkLedgerOverhead(b *testing.B) {
	ctx := context.Background()
	url := pgtest.NewDatabase(b)
	m, err := migrations.Open(ctx, url, "", nil)
	require.NoError(b, err)
	_, err = m.Up(ctx)
	require.NoError(b, err)
	require.NoError(b, m.Close())
	pool, err := pgxpool.New(ctx, url)
	require.NoError(b, err)
	defer pool.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"ok":true}`)) }))
	defer srv.Close()
	l := newLedger(pool, "outbox")
	require.NoError(b, l.takeOwnerLock(ctx))
	defer l.releaseOwnerLock(ctx)
	ep := testEndpoint(srv.URL, true)
	ep.Topics = []string{"bench"}
	require.NoError(b, ep.validate())
	overhead := make([]time.Duration, 0, b.N)
	calls := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := newDelivery(&kgo.Record{Topic: "bench", Key: []byte("k"), Value: []byte(`{}`),
			Headers: []kgo.RecordHeader{{Key: "event_id", Value: []byte(uuid.Must(uuid.NewV7()).String())}}})
		t0 := time.Now()
		c, err := l.claim(ctx, &ep, d)
		if err != nil || c.kind != claimCall {
			b.Fatalf("claim: %v %v", c.kind, err)
		}
		t1 := time.Now()
		res := call(ctx, &ep, &d.ev)
		t2 := time.Now()
		if err := l.record(ctx, &ep, d.ev.ID, c.attempt, &res, StatusSucceeded, nil); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		overhead = append(overhead, t1.Sub(t0)+t3.Sub(t2))
		calls = append(calls, t2.Sub(t1))
	}
	b.StopTimer()
	slices.Sort(overhead)
	slices.Sort(calls)
	pct := func(s []time.Duration, p float64) float64 {
		return float64(s[min(len(s)-1, int(float64(len(s))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(overhead, 0.50), "ledger-p50-ms")
	b.ReportMetric(pct(overhead, 0.99), "ledger-p99-ms")
	b.ReportMetric(pct(calls, 0.50), "call-p50-ms")
	b.ReportMetric(pct(calls, 0.99), "call-p99-ms")
}

// BenchmarkThroughput12Partitions runs a sink over b.N events on 12
// partitions against a local server that answers at once, and reports events/s.
func BenchmarkThroughput12Partitions(b *testing.B) {
	bb := setup(b, 12)
	n := max(b.N, 100)
	bb.produce(n, 1000)
	cfg := bb.config("bench", bb.endpoint(true))
	b.ResetTimer()
	began := time.Now()
	s, err := New(cfg)
	require.NoError(b, err)
	require.NoError(b, s.Start(context.Background()))
	bb.waitSettled(10*time.Minute, StatusSucceeded)
	elapsed := time.Since(began)
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(b, s.Stop(ctx))
	b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d events on 12 partitions in %v", n, elapsed.Round(time.Millisecond))
}
