package sink

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// soak reports whether the full-scale runs were asked for (OUTBOX_SOAK=1).
func soak() bool { return os.Getenv("OUTBOX_SOAK") == "1" }

// TestCrashIdempotentEndpoint SIGKILLs a child sink process at each crash
// point, many times, against an API that honours Idempotency-Key: every
// event's work is done exactly once (redone calls are replays of the same key).
func TestCrashIdempotentEndpoint(t *testing.T) {
	t.Parallel()
	for _, p := range []hookPoint{hookBeforeCall, hookAfterCall, hookAfterRecord} {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			crashTest(t, p, true)
		})
	}
}

// TestCrashNonIdempotentEndpoint does the same against an API that does not
// honour keys (a top-up): no event is ever called twice, and every call left
// in flight by a kill ends unknown and is reconciled by the status lookup.
func TestCrashNonIdempotentEndpoint(t *testing.T) {
	t.Parallel()
	for _, p := range []hookPoint{hookBeforeCall, hookAfterCall, hookAfterRecord} {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			crashTest(t, p, false)
		})
	}
}

func crashTest(t *testing.T, point hookPoint, idempotent bool) {
	events, kills := 120, 8
	if soak() {
		events, kills = 1000, 100
	}
	b := setup(t, 3)
	b.api.honourKeys = idempotent
	if idempotent {
		// Some calls fail once, so retries (and their tier topics) are crashed too.
		b.api.setFail(func(key string, n int) (int, string) {
			if n == 1 && key[len(key)-1] < '3' {
				return 503, ""
			}
			return 0, ""
		})
	}
	b.produce(events, 17)
	began := time.Now()
	killed, runs := 0, 0
	settled := func() bool {
		c := b.counts()
		return c[StatusSucceeded] == events
	}
	for !settled() {
		require.Less(t, runs, kills*4+20, "too many child runs")
		runs++
		cc := childConfig{
			DatabaseURL: b.url, Brokers: b.kafka.Brokers, Topic: b.topic, Group: "crash", Instance: "child",
			URL: b.api.srv.URL, LookupURL: b.api.srv.URL + "/lookup", Idempotent: idempotent,
			Initial: 50 * time.Millisecond, Tiers: []time.Duration{50 * time.Millisecond},
		}
		if killed < kills {
			cc.CrashPoint = string(point)
			cc.CrashAfter = 1 + rand.IntN(max(2, events/(2*kills)))
		}
		raw, err := json.Marshal(cc)
		require.NoError(t, err)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envChild+"="+string(raw))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		runStart := time.Now()
		require.NoError(t, cmd.Start())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var werr error
	wait:
		for {
			select {
			case werr = <-done:
				break wait
			case <-time.After(100 * time.Millisecond):
				if settled() {
					_ = cmd.Process.Signal(syscall.SIGTERM)
					werr = <-done
					break wait
				}
			}
		}
		if d := time.Since(runStart); d > 5*time.Second {
			t.Logf("child run %d took %v\n%s", runs, d, stderr.String())
		}
		var ee *exec.ExitError
		switch {
		case werr == nil:
		case errors.As(werr, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
			killed++
		default:
			t.Fatalf("child run %d: %v\n%s", runs, werr, stderr.String())
		}
	}
	require.GreaterOrEqual(t, killed, kills, "every planned kill happened")

	requests, performed := b.api.snapshot()
	calls, replays, unknown, reconciled := 0, 0, 0, 0
	for _, id := range b.events {
		k := id.String()
		require.Equal(t, 1, performed[k], "event %s: the work is done exactly once", k)
		calls += requests[k]
		if !idempotent {
			require.Equal(t, 1, requests[k], "event %s: a non-idempotent API is never called twice", k)
		}
	}
	for _, r := range b.rows() {
		require.Equal(t, StatusSucceeded, r.Status)
	}
	require.NoError(t, b.pool.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE outcome = 'indeterminate'),
		count(*) FILTER (WHERE outcome = 'reconciled') FROM outbox.sink_attempts`).Scan(&unknown, &reconciled))
	replays = calls - events
	if !idempotent {
		require.Equal(t, unknown, reconciled, "every indeterminate call was reconciled")
		if point != hookAfterRecord {
			require.GreaterOrEqual(t, reconciled, kills, "each kill in a call left one unknown")
		}
	}
	t.Logf("%s idempotent=%v: %d events, %d kills in %d runs, %d requests (%d repeats), %d indeterminate, %d reconciled, %v",
		point, idempotent, events, killed, runs, calls, replays, unknown, reconciled, time.Since(began).Round(time.Millisecond))
}
