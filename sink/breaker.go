package sink

import (
	"context"
	"sync"
	"time"
)

// breakerState is exported as the outbox_sink_breaker_state gauge.
type breakerState int

const (
	breakerClosed   breakerState = 0
	breakerHalfOpen breakerState = 1
	breakerOpen     breakerState = 2
)

// breaker is a consecutive-failures circuit breaker. Closed: calls pass.
// Failures consecutive retriable failures open it. Open: calls wait until the
// cooldown ends, then one probe passes (half-open); its success closes the
// breaker, its failure opens it again. Small enough not to need a library.
type breaker struct {
	failures int // threshold; <= 0 disables
	cooldown time.Duration
	onChange func(breakerState)

	mu       sync.Mutex
	state    breakerState
	count    int
	openedAt time.Time
	probing  bool
	changed  chan struct{} // closed and replaced on every state change or probe end
}

func newBreaker(cfg BreakerConfig, onChange func(breakerState)) *breaker {
	b := &breaker{failures: cfg.Failures, cooldown: cfg.Cooldown, onChange: onChange, changed: make(chan struct{})}
	onChange(breakerClosed)
	return b
}

// wait blocks until a call may go out. probe reports whether the call is the
// half-open probe, which must be ended with done (or release when no call was
// made).
func (b *breaker) wait(ctx context.Context) (probe bool, err error) {
	if b.failures <= 0 {
		return false, nil
	}
	for {
		b.mu.Lock()
		now := time.Now()
		if b.state == breakerOpen && now.Sub(b.openedAt) >= b.cooldown {
			b.setLocked(breakerHalfOpen)
		}
		var wait time.Duration
		switch {
		case b.state == breakerClosed:
			b.mu.Unlock()
			return false, nil
		case b.state == breakerHalfOpen && !b.probing:
			b.probing = true
			b.mu.Unlock()
			return true, nil
		case b.state == breakerOpen:
			wait = b.cooldown - now.Sub(b.openedAt)
		default:
			wait = b.cooldown
		}
		ch := b.changed
		b.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// done records a call's outcome: failed is a retriable failure (the API
// looks down); permanent failures and successes show it is up.
func (b *breaker) done(probe, failed bool) {
	if b.failures <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	if !failed {
		b.count = 0
		if b.state != breakerClosed && (probe || b.state == breakerHalfOpen) {
			b.setLocked(breakerClosed)
		}
		b.notifyLocked()
		return
	}
	b.count++
	if (probe && b.state == breakerHalfOpen) || (b.state == breakerClosed && b.count >= b.failures) {
		b.openedAt = time.Now()
		b.setLocked(breakerOpen)
	}
	b.notifyLocked()
}

// release gives back a probe that made no call.
func (b *breaker) release(probe bool) {
	if !probe || b.failures <= 0 {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.notifyLocked()
	b.mu.Unlock()
}

func (b *breaker) setLocked(s breakerState) {
	if b.state != s {
		b.state = s
		b.onChange(s)
	}
}

func (b *breaker) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}
