package eos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// apacheKafka starts an Apache Kafka cluster of nodes KRaft nodes for the
// test (with 3: RF 3, min.insync.replicas 2 on every topic) and returns it
// with a kafkatest.Kafka on it, made by kafkatest.New through
// OUTBOX_TEST_KAFKA_BROKERS so the package's helpers work unchanged.
// t.Setenv makes the test sequential, which also keeps two JVM clusters off
// this machine at once.
func apacheKafka(t *testing.T, nodes int) (*kafkatest.Apache, *kafkatest.Kafka) {
	t.Helper()
	a := kafkatest.StartApacheT(t, kafkatest.ApacheConfig{Brokers: nodes})
	t.Setenv(kafkatest.EnvBrokers, strings.Join(a.Plaintext, ","))
	k := kafkatest.New(t)
	require.True(t, k.Real())
	return a, k
}

// progress samples the group's committed input offsets every 100ms, so a
// test can tell how long output stood still after a kafkatest.Disruption.
type progress struct {
	kafkatest.Progress
	cancel context.CancelFunc
	done   chan struct{}
}

func startProgress(t *testing.T, adm *kadm.Client, group, topic string) *progress {
	ctx, cancel := context.WithCancel(context.Background())
	p := &progress{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var last int64 = -1
		for ctx.Err() == nil {
			qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
			n, err := committedTotal(qctx, adm, group, topic)
			qcancel()
			if err == nil && n != last {
				last = n
				p.Add(n)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *progress) stop() {
	p.cancel()
	<-p.done
}

// activeTxn is the process (of n, transactional ids "<group>-proc-<i>")
// whose transaction is open on the coordinator, the coordinator's node, and
// whether one was found.
func activeTxn(adm *kadm.Client, group string, n int) (proc, coordinator int, ok bool) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-proc-%d", group, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := adm.DescribeTransactions(ctx, ids...)
	if err != nil {
		return 0, 0, false
	}
	for i, id := range ids {
		if tx, found := d[id]; found && tx.Err == nil && tx.State == "Ongoing" {
			return i, int(tx.Coordinator), true
		}
	}
	return 0, 0, false
}

// groupCoordinator is the node coordinating group, or 0 when unknown.
func groupCoordinator(adm *kadm.Client, group string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return 0
	}
	if g, ok := d[group]; ok && g.Err == nil {
		return int(g.Coordinator.NodeID)
	}
	return 0
}

// TestBrokerBounceEOS is Kafka's transactions system test
// (tests/kafkatest/tests/core/transactions_test.py) for the stage, on three
// KRaft nodes with RF 3 and min.insync.replicas 2: a seeded input topic of 2
// partitions is copied by 3 stage processes (one idle, as in the system
// test) into an output topic of 3 partitions in transactions of 750, while,
// at progress points spread evenly from 20% on (a round never before its
// point, and never after the last input is committed), a broker is
// bounced hard (SIGKILL) or cleanly (SIGTERM) and restarted a few seconds
// later, or a working stage process is SIGKILLed and restarted. Hard bounces
// hit the transaction coordinator of a process with an open transaction,
// clean bounces the group coordinator. A read_committed consumer runs
// throughout; it and the final read must see every input mapped exactly
// once, in per-key order. Default: 6,000 records, one of each kafkatest.Disruption.
// OUTBOX_SOAK=1: 100,000 records, 3 hard and 3 clean bounces, 3 process kills.
func TestBrokerBounceEOS(t *testing.T) {
	a, k := apacheKafka(t, 3)
	records, delay := 6_000, 5*time.Millisecond
	events := kafkatest.Disruptions(1, 1, 1)
	if soak() {
		records, delay = 100_000, 4*time.Millisecond
		events = kafkatest.Disruptions(3, 3, 3)
	}
	const procsN, perTxn = 3, 750
	in := k.Topic("eos-in", 2, nil)
	out := k.Topic("eos-out", 3, nil)
	dlq := k.Topic("eos-dlq", 1, nil)
	group := "eos-bounce-" + in
	start := time.Now()
	produceInput(t, k, in, 0, records, 97, 40)
	t.Logf("produced %d input records in %v", records, time.Since(start).Round(time.Millisecond))

	during := startWatcher(t, k, out)
	prog := startProgress(t, k.Admin(), group, in)
	ps := &procs{t: t, cfg: childConfig{
		Brokers: k.Brokers, Group: group, Input: in, Output: out, DLQ: dlq,
		// A transaction of 750 records takes 750*delay (about 4s by default):
		// the 10s session (9s transaction timeout) leaves room for that and
		// for a broker bounce in the middle of it.
		MaxPerTxn: perTxn, RecordDelay: delay, SessionTimeout: 10 * time.Second,
	}}
	t.Cleanup(ps.killAll)
	for i := range procsN {
		ps.start(i)
	}

	type round struct {
		d       kafkatest.Disruption
		at      time.Time
		node    int
		proc    int
		restart time.Duration
	}
	var rounds []round
	for j, d := range events {
		frac := 0.2 + 0.6*float64(j)/float64(len(events))
		waitCommitted(t, k, group, in, int64(frac*float64(records)), 5*time.Minute)
		at := prog.Last()
		require.Less(t, at, int64(records), "the run finished before round %d could interrupt it: slow the transform down", j+1)
		r := round{d: d, at: time.Now(), proc: -1}
		proc, coord, found := activeTxn(k.Admin(), group, procsN)
		switch d {
		case kafkatest.ProcessKill:
			r.proc = j % procsN
			if found {
				r.proc = proc
			}
			ps.kill(r.proc)
			ps.start(r.proc)
		case kafkatest.HardBounce, kafkatest.CleanBounce:
			r.node = coord
			if d == kafkatest.CleanBounce {
				r.node = groupCoordinator(k.Admin(), group)
			}
			if r.node == 0 {
				r.node = 1 + j%a.Nodes
			}
			r.restart = kafkatest.Bounce(t, a, r.node, d == kafkatest.HardBounce, 3*time.Second)
		}
		what := d.String()
		if r.node != 0 {
			what += fmt.Sprintf(" of node %d, restarted in %s", r.node, r.restart.Round(time.Millisecond))
		} else {
			what += fmt.Sprintf(" of process %d", r.proc)
		}
		t.Logf("round %d: %s, at %.1f%% progress, %s into the run", j+1, what, 100*float64(at)/float64(records), r.at.Sub(start).Round(time.Millisecond))
		rounds = append(rounds, r)
	}
	waitCommitted(t, k, group, in, int64(records), 5*time.Minute)
	end := time.Now()
	t.Logf("all %d inputs committed after %v", records, end.Sub(start).Round(time.Millisecond))
	for i, r := range rounds {
		to := end
		if i+1 < len(rounds) {
			to = rounds[i+1].at
		}
		t.Logf("round %d: %s: longest time the committed offsets stood still after it: %s", i+1, r.d, prog.LongestPause(r.at, to).Round(time.Millisecond))
	}
	for i := range procsN {
		ps.stop(i)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	after, err := k.ReadCommitted(ctx, out)
	require.NoError(t, err)
	verifyMapped(t, after, records, "out:rec-")
	seen := during.wait(t, records, 30*time.Second)
	verifyMapped(t, seen, records, "out:rec-")
	all := readUncommittedCount(t, k, out)
	restarts := 0
	for i := range procsN {
		for _, l := range strings.Split(ps.logs[i].String(), "\n") {
			if strings.Contains(l, "session failed") {
				if restarts++; restarts <= 5 {
					t.Logf("process %d: %s", i, l)
				}
			}
		}
	}
	t.Logf("read_committed (final read and the watcher): %d records, 0 duplicates, 0 lost, per-key order kept; the log holds %d, so %d were written by aborted transactions; %d stage sessions failed and were rebuilt",
		len(after), all, all-len(after), restarts)
}
