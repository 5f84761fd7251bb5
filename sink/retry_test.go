package sink

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/envelope"
)

// TestRacingSinks: 8 sinks, each its own consumer group, race over the same
// events: exactly one call per event.
func TestRacingSinks(t *testing.T) {
	t.Parallel()
	events := 1000
	if soak() {
		events = 10000
	}
	b := setup(t, 4)
	b.produce(events, 97)
	began := time.Now()
	for i := range 8 {
		b.start(b.config("race-"+strconv.Itoa(i), b.endpoint(false)))
	}
	b.waitSettled(3*time.Minute, StatusSucceeded)
	requests, performed := b.api.snapshot()
	for _, id := range b.events {
		require.Equal(t, 1, requests[id.String()], "event %s", id)
		require.Equal(t, 1, performed[id.String()])
	}
	t.Logf("8 sinks, %d events: every event called exactly once in %v", events, time.Since(began).Round(time.Millisecond))
}

// TestRetrySchedule: retriable failures (503, then 429 with Retry-After) are
// retried through the retry tier topics on the configured backoff, within 10%.
//
// Not parallel: it measures timing, so it runs before the parallel tests
// (the crash tests' child processes load both cores).
func TestRetrySchedule(t *testing.T) {
	b := setup(t, 2)
	const fails = 3
	var mu sync.Mutex
	warm := map[string]bool{}
	b.api.setFail(func(key string, n int) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if n <= fails && !warm[key] || n == 1 {
			return 503, ""
		}
		return 0, ""
	})
	ep := b.endpoint(true)
	ep.Retry = RetryPolicy{Initial: time.Second, Multiplier: 2, Max: 5 * time.Second, Jitter: -1,
		Tiers: []time.Duration{100 * time.Millisecond, time.Second}}
	ep.Breaker.Failures = -1 // this test is about the schedule, not the breaker
	s := b.start(b.config("sched", ep))
	// Warm up: one event through the retry tier, so the first measured retry
	// does not include the consumer's first fetch of the tier partitions.
	mu.Lock()
	warm[b.produce(1, 1)[0].String()] = true
	mu.Unlock()
	b.waitSettled(30*time.Second, StatusSucceeded)
	// Events 60ms apart: retries due at the same instant on one tier partition
	// are called one after another, which would add their call times.
	var ids []uuid.UUID
	for range 6 {
		ids = append(ids, b.produce(1, 1)...)
		time.Sleep(60 * time.Millisecond)
	}
	b.waitSettled(30*time.Second, StatusSucceeded)
	for _, id := range ids {
		ts := b.api.times(id.String())
		require.Len(t, ts, fails+1)
		for i := 1; i < len(ts); i++ {
			want := time.Duration(float64(time.Second) * float64(int(1)<<(i-1)))
			got := ts[i].Sub(ts[i-1])
			require.InDelta(t, float64(want), float64(got), 0.1*float64(want), "event %s retry %d: waited %v, want %v", id, i, got, want)
		}
	}
	require.Equal(t, float64(len(ids)*fails+1), testutil.ToFloat64(s.metrics.retries.WithLabelValues("api")))

	// 429 with Retry-After: 2 waits two seconds though the backoff says one.
	b.api.setFail(func(key string, n int) (int, string) {
		if n == 1 {
			return 429, "2"
		}
		return 0, ""
	})
	more := b.produce(2, 2)
	b.waitSettled(30*time.Second, StatusSucceeded)
	for _, id := range more {
		ts := b.api.times(id.String())
		require.Len(t, ts, 2)
		got := ts[1].Sub(ts[0])
		require.InDelta(t, float64(2*time.Second), float64(got), 0.1*float64(2*time.Second), "Retry-After honoured: %v", got)
	}
}

// TestAccountingAndProgress: one partition, some events fail for a while and
// some for good. The partition keeps moving while retries are pending, and
// every event ends succeeded or dead-lettered, matching the dead-letter topic.
func TestAccountingAndProgress(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ids := b.produce(50, 50)
	slow, bad := map[string]bool{}, map[string]bool{}
	for i, id := range ids {
		switch {
		case i%10 == 0:
			slow[id.String()] = true
		case i%10 == 5:
			bad[id.String()] = true
		}
	}
	b.api.setFail(func(key string, n int) (int, string) {
		switch {
		case slow[key] && n <= 2:
			return 503, ""
		case bad[key]:
			return 422, ""
		}
		return 0, ""
	})
	ep := b.endpoint(true)
	// Backoff long enough that the rest of the partition is surely done
	// before the first retry, even on a loaded machine.
	ep.Retry = RetryPolicy{Initial: 1500 * time.Millisecond, Multiplier: 1, Tiers: []time.Duration{time.Second}}
	ep.Breaker.Failures = -1
	b.start(b.config("acct", ep))
	c := b.waitSettled(30*time.Second, StatusSucceeded, StatusDeadLettered)
	require.Equal(t, 45, c[StatusSucceeded])
	require.Equal(t, 5, c[StatusDeadLettered])
	require.Equal(t, len(ids), c[StatusSucceeded]+c[StatusDeadLettered], "events in = succeeded + dead-lettered")

	// The partition moved on: the last ordinary event succeeded before the
	// first slow one, which sits ahead of it in the partition, got its last try.
	firstSlow := b.api.times(ids[0].String())
	lastOrdinary := b.api.times(ids[49].String())
	require.Len(t, firstSlow, 3)
	require.True(t, lastOrdinary[0].Before(firstSlow[1]), "offset 49 was called before offset 0's first retry")

	recs, err := b.kafka.ReadCommitted(context.Background(), b.topic+".dlt")
	require.NoError(t, err)
	require.Len(t, recs, 5)
	_, performed := b.api.snapshot()
	total := 0
	for _, n := range performed {
		total += n
	}
	require.Equal(t, 45, total, "succeeded in the ledger = work done by the API")
}

// TestValidationFailureRetryCount: a 422 with PermanentRetries=3 is tried 4
// times, then dead-lettered with its whole history; without a dead-letter
// topic the row ends failed.
func TestValidationFailureRetryCount(t *testing.T) {
	t.Parallel()
	for _, withDLT := range []bool{true, false} {
		t.Run("dlt="+strconv.FormatBool(withDLT), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 1)
			b.api.setFail(func(string, int) (int, string) { return 422, "" })
			ids := b.produce(1, 1)
			ep := b.endpoint(true)
			ep.Retry = RetryPolicy{PermanentRetries: 3, Initial: 50 * time.Millisecond, Tiers: []time.Duration{50 * time.Millisecond}}
			final := StatusDeadLettered
			if !withDLT {
				ep.DeadLetterTopic = "-"
				final = StatusFailed
			}
			b.start(b.config("val", ep))
			b.waitSettled(30*time.Second, final)
			row := b.rows()[0]
			require.Equal(t, int32(4), row.Attempts)
			require.Equal(t, int32(422), *row.LastStatusCode)
			requests, _ := b.api.snapshot()
			require.Equal(t, 4, requests[ids[0].String()])
			hist, err := newLedger(b.pool, "outbox").history(context.Background(), &Endpoint{Name: "api"}, ids[0])
			require.NoError(t, err)
			require.Len(t, hist, 4, "error count = retries + 1")
			if !withDLT {
				return
			}
			recs, err := b.kafka.ReadCommitted(context.Background(), b.topic+".dlt")
			require.NoError(t, err)
			require.Len(t, recs, 1)
			hs := make([]envelope.Header, len(recs[0].Headers))
			for i, h := range recs[0].Headers {
				hs[i] = envelope.Header(h)
			}
			dl := envelope.ParseDeadLetter(hs)
			require.Equal(t, 4, dl.Attempt)
			require.Len(t, dl.History, 4)
			require.Equal(t, "http_422", dl.ErrorClass)
			require.Equal(t, "sink", dl.Stage)
			require.Equal(t, b.topic, dl.OriginTopic)
			require.Equal(t, 422, dl.History[3].Status)
		})
	}
}

// TestOrderedMode: later events of a retrying key wait; other keys move on.
func TestOrderedMode(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ids := b.produce(12, 3)  // keys k0,k1,k2 interleaved
	first := ids[0].String() // k0's first event
	b.api.setFail(func(key string, n int) (int, string) {
		if key == first && n <= 2 {
			return 503, ""
		}
		return 0, ""
	})
	ep := b.endpoint(true)
	ep.Mode = ModeOrdered
	ep.Retry = RetryPolicy{Initial: 300 * time.Millisecond, Jitter: -1}
	b.start(b.config("ordered", ep))
	b.waitSettled(30*time.Second, StatusSucceeded)
	done := b.api.times(first)
	require.Len(t, done, 3)
	for i, id := range ids {
		ts := b.api.times(id.String())
		require.Len(t, ts, map[bool]int{true: 3, false: 1}[i == 0])
		switch i % 3 {
		case 0:
			if i > 0 {
				require.True(t, ts[0].After(done[2]), "k0 event %d waited for k0's first event", i)
			}
		default:
			require.True(t, ts[0].Before(done[1]), "other keys moved on while k0 retried (event %d)", i)
		}
	}
}

// TestBreakerPausesCalls: while the API is down the breaker opens and the
// sink waits instead of burning retries; it resumes when the API is back.
func TestBreakerPausesCalls(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	var mu sync.Mutex
	down := true
	b.api.setFail(func(string, int) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return 503, ""
		}
		return 0, ""
	})
	b.produce(40, 40)
	ep := b.endpoint(true)
	ep.Retry = RetryPolicy{Retries: 50, Initial: 20 * time.Millisecond, Max: 50 * time.Millisecond, Tiers: []time.Duration{20 * time.Millisecond}}
	ep.Breaker = BreakerConfig{Failures: 3, Cooldown: 500 * time.Millisecond}
	s := b.start(b.config("breaker", ep))
	calls := func() int {
		requests, _ := b.api.snapshot()
		n := 0
		for _, v := range requests {
			n += v
		}
		return n
	}
	// On a loaded machine the sink may take a while to join its group and
	// fail three times: wait for the breaker to open, then count.
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(s.metrics.breakerState.WithLabelValues("api")) != float64(breakerClosed)
	}, 30*time.Second, 10*time.Millisecond, "the breaker never opened while the API failed")
	n0 := calls()
	time.Sleep(2 * time.Second)
	// Without the breaker 40 events x 50 retries at <=50ms would make hundreds
	// of calls in 2s; with it: one probe per 500ms cooldown.
	require.Less(t, calls()-n0, 12, "the open breaker holds calls back")
	// The breaker swings between open and half-open (one probe per cooldown)
	// while the API is down; a sample at any moment may catch either.
	require.Contains(t, []float64{float64(breakerOpen), float64(breakerHalfOpen)},
		testutil.ToFloat64(s.metrics.breakerState.WithLabelValues("api")), "the breaker is not closed while the API fails")
	mu.Lock()
	down = false
	mu.Unlock()
	b.waitSettled(30*time.Second, StatusSucceeded)
	require.Equal(t, float64(breakerClosed), testutil.ToFloat64(s.metrics.breakerState.WithLabelValues("api")))
}

// TestRateLimit: calls keep to the endpoint's rate limit.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ids := b.produce(30, 30)
	ep := b.endpoint(true)
	ep.RateLimit, ep.RateBurst = 20, 1
	b.start(b.config("rate", ep))
	b.waitSettled(30*time.Second, StatusSucceeded)
	var first, last time.Time
	for _, id := range ids {
		ts := b.api.times(id.String())[0]
		if first.IsZero() || ts.Before(first) {
			first = ts
		}
		if ts.After(last) {
			last = ts
		}
	}
	// 30 calls at 20/s with a burst of 1 take at least 29/20 s.
	require.GreaterOrEqual(t, last.Sub(first), time.Duration(float64(29*time.Second/20)*0.95))
}
