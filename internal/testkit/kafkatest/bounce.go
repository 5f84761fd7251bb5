package kafkatest

import (
	"sync"
	"testing"
	"time"
)

// Disruption is one interruption of a bounce test (Kafka's transactions
// system test): a broker node bounced hard or cleanly, or the stage process
// itself killed.
type Disruption int

const (
	// HardBounce SIGKILLs a broker node and restarts it a few seconds later.
	HardBounce Disruption = iota
	// CleanBounce stops a broker node with SIGTERM and restarts it a few seconds later.
	CleanBounce
	// ProcessKill SIGKILLs the stage's own process and restarts it.
	ProcessKill
)

func (d Disruption) String() string {
	return [...]string{"hard broker bounce (SIGKILL)", "clean broker bounce (SIGTERM)", "process SIGKILL"}[d]
}

// Disruptions interleaves the rounds: hard bounces, process kills and clean
// bounces in turn, so each kind meets the others' aftermath.
func Disruptions(hard, clean, kills int) []Disruption {
	n := hard + clean + kills
	var out []Disruption
	for len(out) < n {
		for _, c := range []struct {
			d Disruption
			n *int
		}{{HardBounce, &hard}, {ProcessKill, &kills}, {CleanBounce, &clean}} {
			if *c.n > 0 {
				*c.n--
				out = append(out, c.d)
			}
		}
	}
	return out
}

// Bounce takes node of a down (SIGKILL when hard, else SIGTERM and wait),
// keeps it down for down, and starts it again, waiting until it serves. It
// returns how long the restart took.
func Bounce(t testing.TB, a *Apache, node int, hard bool, down time.Duration) time.Duration {
	t.Helper()
	var err error
	if hard {
		err = a.Kill(node)
	} else {
		err = a.StopNode(node)
	}
	if err != nil {
		t.Fatalf("kafkatest: take node %d down: %v", node, err)
	}
	time.Sleep(down)
	start := time.Now()
	if err := a.StartNode(node); err != nil {
		t.Fatalf("kafkatest: restart node %d: %v", node, err)
	}
	return time.Since(start)
}

// Progress records when a running count (records seen, offsets committed)
// moved, so a bounce test can tell how long output stood still after a
// disruption. It is safe for concurrent use.
type Progress struct {
	mu    sync.Mutex
	at    []time.Time
	total []int64
}

// Add records that the count reached total now.
func (p *Progress) Add(total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.at = append(p.at, time.Now())
	p.total = append(p.total, total)
}

// Last is the last count recorded, 0 before any.
func (p *Progress) Last() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.total) == 0 {
		return 0
	}
	return p.total[len(p.total)-1]
}

// LongestPause is the longest time between from and to in which the count
// did not move, counting from "from" itself: after a disruption at from, how
// long the output stood still.
func (p *Progress) LongestPause(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	last, longest := from, time.Duration(0)
	for _, at := range p.at {
		if at.Before(from) {
			continue
		}
		if at.After(to) {
			break
		}
		longest = max(longest, at.Sub(last))
		last = at
	}
	return max(longest, to.Sub(last))
}

// FirstAfter is how long after t0 the count first went past n, or -1.
func (p *Progress) FirstAfter(t0 time.Time, n int64) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, at := range p.at {
		if at.After(t0) && p.total[i] > n {
			return at.Sub(t0)
		}
	}
	return -1
}
