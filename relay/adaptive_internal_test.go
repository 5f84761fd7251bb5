package relay

import (
	"testing"
	"time"
)

// The adaptive wait, as a function of the arrival history: each case could
// fail by waiting when it should commit (latency when idle) or committing
// when it should wait (a Kafka transaction per Postgres transaction when busy).
func TestAdaptiveWait(t *testing.T) {
	now := time.Now()
	wal := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	feed := func(p *pump, gaps ...time.Duration) {
		ct := wal
		for _, g := range gaps {
			ct = ct.Add(g)
			p.seeArrival(ct)
		}
	}
	newPump := func(maxLatency, linger time.Duration) *pump {
		return &pump{r: &Relay{cfg: Config{MaxLatency: maxLatency, Linger: linger}}, events: 1, firstAt: now}
	}
	ms := time.Millisecond

	t.Run("no history commits at once", func(t *testing.T) {
		p := newPump(5*ms, 0)
		if w := p.wait(now); w > 0 {
			t.Fatalf("waited %s with no arrivals seen", w)
		}
	})
	t.Run("idle stream commits at once", func(t *testing.T) {
		p := newPump(5*ms, 0)
		feed(p, 0, time.Second, time.Second, time.Second)
		p.lastArrive = now
		if w := p.wait(now); w > 0 {
			t.Fatalf("waited %s though transactions come every second against a 5ms budget", w)
		}
	})
	t.Run("busy stream waits for the next", func(t *testing.T) {
		p := newPump(5*ms, 0)
		feed(p, 0, ms, ms, ms, ms, ms)
		p.lastArrive = now
		w := p.wait(now)
		if w < 1500*time.Microsecond || w > 2500*time.Microsecond {
			t.Fatalf("waited %s; want about twice the 1ms gap", w)
		}
	})
	t.Run("busy stream stops at the budget", func(t *testing.T) {
		p := newPump(5*ms, 0)
		feed(p, 0, ms, ms, ms, ms, ms)
		p.lastArrive = now.Add(4500 * time.Microsecond)
		if w := p.wait(now.Add(4500 * time.Microsecond)); w > 500*time.Microsecond {
			t.Fatalf("waited %s past the 5ms budget", w)
		}
		p.lastArrive = now.Add(6 * ms)
		if w := p.wait(now.Add(6 * ms)); w > 0 {
			t.Fatalf("waited %s with the budget spent", w)
		}
	})
	t.Run("quiet for two gaps commits", func(t *testing.T) {
		p := newPump(5*ms, 0)
		feed(p, 0, ms, ms, ms)
		p.lastArrive = now
		if w := p.wait(now.Add(2100 * time.Microsecond)); w > 0 {
			t.Fatalf("waited %s after two gaps without a transaction", w)
		}
	})
	t.Run("a burst queued behind a commit keeps its WAL gaps", func(t *testing.T) {
		p := newPump(50*ms, 0)
		// Committed 3ms apart in Postgres, handled here in one go.
		feed(p, 0, 3*ms, 3*ms, 3*ms)
		if p.gap < 2*ms || p.gap > 4*ms {
			t.Fatalf("gap %s; want the WAL's 3ms", p.gap)
		}
	})
	t.Run("one long pause does not make a busy stream idle", func(t *testing.T) {
		p := newPump(5*ms, 0)
		feed(p, 0, ms, ms, ms, ms, ms, ms, ms, ms, time.Minute, ms)
		if p.gap > maxGap {
			t.Fatalf("gap %s above the cap %s", p.gap, maxGap)
		}
	})
	t.Run("negative MaxLatency never waits", func(t *testing.T) {
		p := newPump(-1, 0)
		feed(p, 0, ms, ms, ms)
		p.lastArrive = now
		if w := p.wait(now); w > 0 {
			t.Fatalf("waited %s with MaxLatency negative", w)
		}
	})
	t.Run("a fixed linger replaces the adaptive wait", func(t *testing.T) {
		p := newPump(5*ms, 20*ms)
		feed(p, 0, time.Second, time.Second)
		if w := p.wait(now.Add(5 * ms)); w != 15*ms {
			t.Fatalf("waited %s; want what is left of the 20ms linger", w)
		}
	})
	t.Run("a checkpoint-only batch does not wait", func(t *testing.T) {
		p := newPump(5*ms, 0)
		feed(p, 0, ms, ms, ms)
		p.lastArrive, p.events = now, 0
		if w := p.wait(now); w > 0 {
			t.Fatalf("waited %s for a batch without events", w)
		}
	})
}
