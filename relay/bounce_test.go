package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// setupApache is setup on an Apache Kafka cluster of the test's own (nodes
// KRaft nodes; with 3, every topic has RF 3 and min.insync.replicas 2). The
// bundle's Kafka comes from kafkatest.New through OUTBOX_TEST_KAFKA_BROKERS,
// so topics and reads work as in every other test; t.Setenv makes the test
// sequential, which also keeps two JVM clusters off this machine at once.
func setupApache(t *testing.T, nodes int) (*testBundle, *kafkatest.Apache) {
	t.Helper()
	a := kafkatest.StartApacheT(t, kafkatest.ApacheConfig{Brokers: nodes})
	t.Setenv(kafkatest.EnvBrokers, strings.Join(a.Plaintext, ","))
	b := setup(t)
	require.True(t, b.k.Real())
	return b, a
}

// eventWatcher is a read_committed consumer that runs for the whole test and
// checks every event as it arrives: an event id seen at a second offset is a
// duplicate, a sequence number not following its aggregate's last is
// disorder. It keeps the arrival times to measure stalls.
type eventWatcher struct {
	mu       sync.Mutex
	first    map[string]string // event id -> partition/offset it was first seen at
	next     map[string]int    // aggregate -> next sequence number
	dups     int
	disorder int
	refetch  int // the same offset delivered again (not a duplicate)
	arrivals kafkatest.Progress
	cancel   context.CancelFunc
	done     chan struct{}
}

func startEventWatcher(t *testing.T, opts []kgo.Opt, topic string) *eventWatcher {
	t.Helper()
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	w := &eventWatcher{first: map[string]string{}, next: map[string]int{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			recs := fs.Records()
			if len(recs) == 0 {
				continue
			}
			w.mu.Lock()
			for _, r := range recs {
				w.see(r)
			}
			w.arrivals.Add(int64(len(w.first)))
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		w.stop()
		cl.Close()
	})
	return w
}

func (w *eventWatcher) see(r *kgo.Record) {
	id := header(r, envelope.HeaderEventID)
	at := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
	if prev, ok := w.first[id]; ok {
		if prev == at {
			w.refetch++
		} else {
			w.dups++
		}
		return
	}
	w.first[id] = at
	var p payload
	if json.Unmarshal(r.Value, &p) != nil || p.Seq != w.next[p.Agg] {
		w.disorder++
	}
	w.next[p.Agg] = p.Seq + 1
}

func (w *eventWatcher) stop() {
	w.cancel()
	<-w.done
}

// count is how many distinct events the watcher has seen.
func (w *eventWatcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.first)
}

// waitCount waits until the watcher has seen n distinct events.
func (w *eventWatcher) waitCount(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return w.count() >= n }, timeout, 50*time.Millisecond,
		"the read_committed watcher saw fewer than %d events within %s", n, timeout)
}

// txnCoordinator is the node coordinating txnID, or 0 when unknown.
func txnCoordinator(adm *kadm.Client, txnID string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := adm.DescribeTransactions(ctx, txnID)
	if err != nil {
		return 0
	}
	if tx, ok := d[txnID]; ok && tx.Err == nil {
		return int(tx.Coordinator)
	}
	return 0
}

// partitionLeader is the leader of topic's partition p, or 0 when unknown.
func partitionLeader(adm *kadm.Client, topic string, p int32) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0
	}
	if pd, ok := td[topic].Partitions[p]; ok && pd.Err == nil {
		return int(pd.Leader)
	}
	return 0
}

// relaySessions counts the sessions a child's log says failed and restarted.
func relaySessions(t *testing.T, logs []string) int {
	n := 0
	for _, l := range logs {
		out, err := os.ReadFile(l)
		require.NoError(t, err)
		n += strings.Count(string(out), "session ended; restarting from the slot")
	}
	return n
}

// TestBrokerBounceRelay is Kafka's transactions system test
// (tests/kafkatest/tests/core/transactions_test.py) for the relay, on three
// KRaft nodes with RF 3 and min.insync.replicas 2: a writer commits outbox
// rows steadily while, at progress points spread evenly from 20% on (a round
// never before its point, and never after the last event is relayed), a
// broker is bounced hard (SIGKILL) or cleanly (SIGTERM) and restarted a few
// seconds later, or the relay process itself is SIGKILLed and restarted. The relay batches up to 750 events per Kafka
// transaction. A read_committed consumer runs throughout and must never see a
// duplicate or an aggregate out of order; the final read must hold every
// outbox row exactly once. Hard bounces hit the transaction coordinator of
// the relay's transactional id, clean bounces the checkpoint partition's
// leader: the brokers the exactly-once path leans on.
// Default: 6,000 events, one of each disruption. OUTBOX_SOAK=1: 100,000
// events, 3 hard and 3 clean bounces and 3 relay kills.
func TestBrokerBounceRelay(t *testing.T) {
	b, a := setupApache(t, 3)
	total := scale(6000, 100000)
	events := kafkatest.Disruptions(scale(1, 3), scale(1, 3), scale(1, 3))
	pause := 15 * time.Millisecond // about 200 rows a second here
	if soak() {
		pause = 3 * time.Millisecond
	}
	cc := b.childConfig()
	cc.MaxBatch = 750
	// A lingering batch collects a second or two of rows, so Kafka
	// transactions hold hundreds of events (750 while catching up) and a
	// bounce lands inside one, as the system test's 750-record transactions do.
	cc.Linger = 2 * time.Second
	txnID := "outbox-relay-" + b.slot

	start := time.Now()
	watch := startEventWatcher(t, b.k.Opts(), b.topic)
	w := startWriter(t, b.url, 20, 5, pause, int64(total))
	c := b.startChild(t, cc)
	logs := []string{c.log}
	type round struct {
		d       kafkatest.Disruption
		at      time.Time
		node    int
		restart time.Duration
	}
	var rounds []round
	for i, d := range events {
		frac := 0.2 + 0.6*float64(i)/float64(len(events))
		watch.waitCount(t, int(frac*float64(total)), 5*time.Minute)
		r := round{d: d, at: time.Now()}
		seen := watch.count()
		// Events still flow through the relay: the round interrupts the work.
		require.Less(t, seen, total, "the relay finished before round %d could interrupt it: slow the writer down", i+1)
		switch d {
		case kafkatest.ProcessKill:
			c.kill()
			c = b.startChild(t, cc)
			logs = append(logs, c.log)
		case kafkatest.HardBounce, kafkatest.CleanBounce:
			r.node = txnCoordinator(b.k.Admin(), txnID)
			if d == kafkatest.CleanBounce {
				r.node = partitionLeader(b.k.Admin(), b.checkpoint, 0)
			}
			if r.node == 0 {
				r.node = 1 + i%a.Nodes
			}
			r.restart = kafkatest.Bounce(t, a, r.node, d == kafkatest.HardBounce, 3*time.Second)
		}
		what := d.String()
		if r.node != 0 {
			what += fmt.Sprintf(" of node %d, restarted in %s", r.node, r.restart.Round(time.Millisecond))
		}
		t.Logf("round %d: %s, at %.1f%% progress (%d events committed, %d written), %s into the run",
			i+1, what, 100*float64(seen)/float64(total), seen, w.committed.Load(), r.at.Sub(start).Round(time.Millisecond))
		rounds = append(rounds, r)
	}
	<-w.done
	written := w.stop()
	watch.waitCount(t, int(written), 3*time.Minute)
	end := time.Now()
	for i, r := range rounds {
		to := end
		if i+1 < len(rounds) {
			to = rounds[i+1].at
		}
		t.Logf("round %d: %s: longest pause in committed output after it: %s", i+1, r.d, watch.arrivals.LongestPause(r.at, to).Round(time.Millisecond))
	}

	n := b.verifyExactlyOnce(t, 3*time.Minute)
	require.EqualValues(t, written, n)
	watch.stop()
	watch.mu.Lock()
	dups, disorder, refetch, seen := watch.dups, watch.disorder, watch.refetch, len(watch.first)
	watch.mu.Unlock()
	require.Zero(t, dups, "the read_committed watcher saw duplicates during the run")
	require.Zero(t, disorder, "the read_committed watcher saw an aggregate out of order")
	require.Equal(t, n, seen)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cks, err := b.k.ReadCommitted(ctx, b.checkpoint)
	require.NoError(t, err)
	// Stop the relay with SIGTERM so its log ends cleanly, then count.
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	<-c.done
	t.Logf("%d events exactly once through %d rounds in %s: %d committed Kafka transactions (checkpoint records, heartbeat-only ones included; %.0f events each on average), "+
		"%d relay sessions restarted, watcher: 0 duplicates, 0 out of order, %d re-fetched offsets",
		n, len(rounds), time.Since(start).Round(time.Millisecond), len(cks), float64(n)/float64(max(1, len(cks))), relaySessions(t, logs), refetch)
}

// TestBrokerOutageRelayKilledDuringIt is the fault that lost events on kfake
// (8,551 of 60,000 for two independent read_committed readers): the only
// broker is SIGKILLed while rows flow, the relay is SIGKILLed while the
// broker is down (so its open Kafka transaction has no end), a new relay
// starts into the outage, and then the broker comes back. The restarted
// broker still holds the killed producer's open transaction; the new relay's
// InitProducerID must abort it with real markers before anything else
// commits, so a read_committed consumer running throughout and the final
// read see every row exactly once.
// Default: 3,000 rows, a 10 s outage. OUTBOX_SOAK=1: 60,000 rows, 75 s.
func TestBrokerOutageRelayKilledDuringIt(t *testing.T) {
	b, a := setupApache(t, 1)
	total := scale(3000, 60000)
	outage := time.Duration(scale(10, 75)) * time.Second
	pause := 10 * time.Millisecond
	if soak() {
		pause = time.Millisecond
	}
	cc := b.childConfig()
	start := time.Now()
	watch := startEventWatcher(t, b.k.Opts(), b.topic)
	w := startWriter(t, b.url, 20, 5, pause, int64(total))
	c := b.startChild(t, cc)
	watch.waitCount(t, total/4, 5*time.Minute)
	before := watch.count()
	require.Less(t, before, total, "the relay finished before the outage: slow the writer down")
	require.NoError(t, a.Kill(1), "kill the broker")
	down := time.Now()
	time.Sleep(outage / 3)
	c.kill()
	c = b.startChild(t, cc)
	time.Sleep(outage - time.Since(down))
	restart := time.Now()
	require.NoError(t, a.StartNode(1), "restart the broker")
	t.Logf("broker SIGKILLed at %d events seen, relay SIGKILLed and restarted %s into the outage, broker back after %s (restart took %s)",
		before, (outage / 3).Round(time.Second), time.Since(down).Round(time.Millisecond), time.Since(restart).Round(time.Millisecond))
	after := watch.count()
	<-w.done
	written := w.stop()
	watch.waitCount(t, int(written), 3*time.Minute)
	resumed := watch.arrivals.FirstAfter(restart, int64(after))
	n := b.verifyExactlyOnce(t, 3*time.Minute)
	require.EqualValues(t, written, n)
	watch.stop()
	watch.mu.Lock()
	dups, disorder := watch.dups, watch.disorder
	watch.mu.Unlock()
	require.Zero(t, dups, "the read_committed watcher saw duplicates")
	require.Zero(t, disorder, "the read_committed watcher saw an aggregate out of order")
	t.Logf("%d rows exactly once in %s; new events visible %s after the broker's restart began; watcher: 0 duplicates, 0 out of order",
		n, time.Since(start).Round(time.Millisecond), resumed.Round(time.Millisecond))
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	<-c.done
}
