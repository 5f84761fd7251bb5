package eos

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// TestRebalanceChurn chains two stages (in -> mid -> out), each a group whose
// members join and leave while input keeps arriving, under the range (eager)
// and cooperative-sticky balancers. Every input offset must be committed
// exactly once at each hop: the members' committed record counts sum to the
// input count, and each hop's output holds each source offset once.
func TestRebalanceChurn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		balancer func() kgo.GroupBalancer
	}{
		{"range", kgo.RangeBalancer},
		{"cooperative-sticky", kgo.CooperativeStickyBalancer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testChurn(t, tc.balancer)
		})
	}
}

// hop is one stage's group and the members it has had.
type hop struct {
	t        *testing.T
	name     string
	cfg      Config
	mu       sync.Mutex
	running  []*Stage
	all      []*Stage
	sequence int
}

func (h *hop) add() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.cfg
	h.sequence++
	c.Name = fmt.Sprintf("%s-%d", h.name, h.sequence)
	c.TransactionalID = c.Group + "-" + c.Name
	s, err := New(c)
	require.NoError(h.t, err)
	require.NoError(h.t, s.Start(context.Background()))
	h.running = append(h.running, s)
	h.all = append(h.all, s)
}

// remove stops the oldest running member, keeping at least one.
func (h *hop) remove() {
	h.t.Helper()
	h.mu.Lock()
	if len(h.running) < 2 {
		h.mu.Unlock()
		return
	}
	s := h.running[0]
	h.running = h.running[1:]
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(h.t, s.Stop(ctx))
}

func (h *hop) stopAll() {
	for {
		h.mu.Lock()
		if len(h.running) == 0 {
			h.mu.Unlock()
			return
		}
		s := h.running[0]
		h.running = h.running[1:]
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = s.Stop(ctx)
		cancel()
	}
}

// committedIn sums the inputs of every committed transaction of every member.
func (h *hop) committedIn() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0.0
	for _, s := range h.all {
		n += testutil.ToFloat64(s.m.recordsIn)
	}
	return int(n)
}

func (h *hop) aborted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0.0
	for _, s := range h.all {
		n += testutil.ToFloat64(s.m.txnAborted)
	}
	return int(n)
}

func testChurn(t *testing.T, balancer func() kgo.GroupBalancer) {
	k := kafkatest.New(t)
	in := k.Topic("churn-in", 4, nil)
	mid := k.Topic("churn-mid", 3, nil)
	out := k.Topic("churn-out", 2, nil)
	dlq := k.Topic("churn-dlq", 1, nil)
	n := 6_000
	if soak() {
		n = 50_000
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	base := Config{
		KafkaOpts:          k.Opts(),
		DeadLetterTopic:    dlq,
		Transform:          slowMark(100 * time.Microsecond),
		MaxRecordsPerTxn:   200,
		SessionTimeout:     6 * time.Second,
		TransactionTimeout: 5 * time.Second,
		RebalanceTimeout:   10 * time.Second,
		RestartBackoff:     100 * time.Millisecond,
		Balancers:          []kgo.GroupBalancer{balancer()},
		Logger:             log,
	}
	a := &hop{t: t, name: "A", cfg: base}
	a.cfg.Group, a.cfg.InputTopics, a.cfg.OutputTopic = "churn-a-"+in, []string{in}, mid
	b := &hop{t: t, name: "B", cfg: base}
	b.cfg.Group, b.cfg.InputTopics, b.cfg.OutputTopic = "churn-b-"+in, []string{mid}, out
	t.Cleanup(a.stopAll)
	t.Cleanup(b.stopAll)
	a.add()
	b.add()

	// Input arrives in 20 slices while members join and leave.
	start := time.Now()
	produced := make(chan error, 1)
	go func() {
		for i := 0; i < n; i += n / 20 {
			if err := produceRecords(k, in, i, n/20, 31, 40); err != nil {
				produced <- err
				return
			}
			time.Sleep(150 * time.Millisecond)
		}
		produced <- nil
	}()
	for step := range 12 {
		switch step % 4 {
		case 0:
			a.add()
		case 1:
			b.add()
		case 2:
			a.remove()
		case 3:
			b.add()
			b.remove()
		}
		time.Sleep(300 * time.Millisecond)
	}
	require.NoError(t, <-produced)

	deadline := time.Now().Add(2 * time.Minute)
	for (a.committedIn() < n || b.committedIn() < n) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, n, a.committedIn(), "stage A committed inputs")
	require.Equal(t, n, b.committedIn(), "stage B committed inputs")
	t.Logf("churn: %d records through 2 hops in %v; members A=%d B=%d; aborted transactions A=%d B=%d",
		n, time.Since(start).Round(time.Millisecond), len(a.all), len(b.all), a.aborted(), b.aborted())
	a.stopAll()
	b.stopAll()
	// A few more transactions must not have committed anything twice meanwhile.
	require.Equal(t, n, a.committedIn())
	require.Equal(t, n, b.committedIn())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	midRecs, err := k.ReadCommitted(ctx, mid)
	require.NoError(t, err)
	verifyMapped(t, midRecs, n, "out:rec-")
	outRecs, err := k.ReadCommitted(ctx, out)
	require.NoError(t, err)
	verifyMapped(t, outRecs, n, "out:out:rec-")
	inSrc, midSrc := map[string]bool{}, map[string]bool{}
	for _, r := range outRecs {
		var srcs []string
		for _, h := range r.Headers {
			if h.Key == hdrSrc {
				srcs = append(srcs, string(h.Value))
			}
		}
		require.Len(t, srcs, 2, "an output carries the in and mid offsets it came from")
		require.False(t, inSrc[srcs[0]], "input offset %s committed twice", srcs[0])
		require.False(t, midSrc[srcs[1]], "mid offset %s committed twice", srcs[1])
		inSrc[srcs[0]], midSrc[srcs[1]] = true, true
	}
}
