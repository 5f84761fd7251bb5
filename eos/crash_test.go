package eos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// crashScale sizes Kafka's transactions test (its system test
// transactions_test.py: copiers killed and restarted while a read_committed
// consumer checks the output).
type crashScale struct {
	records       int
	inPartitions  int32
	outPartitions int32
	procs         int
	perTxn        int
	kills         int // SIGKILL rounds
	restarts      int // clean (SIGTERM) restart rounds
	recordDelay   time.Duration
}

func soak() bool { return os.Getenv(envSoak) == "1" }

// TestTransactionsKillRestart is Kafka's transactions test with real child
// processes: 3 stage processes copy an input topic through the mark transform
// while some are SIGKILLed and others restarted cleanly, each at 20% progress
// or more. A read_committed consumer, during and after, must see every input
// mapped exactly once, in per-key order. OUTBOX_SOAK=1 runs the full scale:
// 100,000 records, transactions of 750, 3 kill and 3 restart rounds.
func TestTransactionsKillRestart(t *testing.T) {
	t.Parallel()
	sc := crashScale{records: 10_000, inPartitions: 6, outPartitions: 4, procs: 3, perTxn: 750,
		kills: 1, restarts: 1, recordDelay: 2 * time.Millisecond}
	if soak() {
		sc.records, sc.kills, sc.restarts, sc.recordDelay = 100_000, 3, 3, 1500*time.Microsecond
	}
	order := runCrashTest(t, sc)
	require.Len(t, order, sc.records)
}

// TestTransactionsKillRestartOnePartition is the one-partition variant: the
// output must hold the input in exactly its order.
func TestTransactionsKillRestartOnePartition(t *testing.T) {
	t.Parallel()
	sc := crashScale{records: 4_000, inPartitions: 1, outPartitions: 1, procs: 3, perTxn: 750,
		kills: 1, restarts: 1, recordDelay: time.Millisecond}
	if soak() {
		sc.records, sc.kills, sc.restarts = 30_000, 3, 3
	}
	order := runCrashTest(t, sc)
	for i, n := range order {
		require.Equal(t, i, n, "output position %d holds input %d", i, n)
	}
}

func runCrashTest(t *testing.T, sc crashScale) []int {
	k := kafkatest.New(t)
	in := k.Topic("eos-in", sc.inPartitions, nil)
	out := k.Topic("eos-out", sc.outPartitions, nil)
	dlq := k.Topic("eos-dlq", 1, nil)
	group := "eos-crash-" + in
	start := time.Now()
	produceInput(t, k, in, 0, sc.records, 97, 40)
	t.Logf("produced %d input records in %v", sc.records, time.Since(start))

	during := startWatcher(t, k, out)

	ps := &procs{t: t, cfg: childConfig{
		Brokers: k.Brokers, Group: group, Input: in, Output: out, DLQ: dlq,
		MaxPerTxn: sc.perTxn, RecordDelay: sc.recordDelay, SessionTimeout: 6 * time.Second,
	}}
	t.Cleanup(ps.killAll)
	for i := range sc.procs {
		ps.start(i)
	}

	// Alternate kills and clean restarts at evenly spaced progress points
	// from 20% up, each on the next process in turn.
	events := sc.kills + sc.restarts
	kills, restarts := 0, 0
	for j := range events {
		frac := 0.2 + 0.6*float64(j)/float64(events)
		waitCommitted(t, k, group, in, int64(frac*float64(sc.records)), 3*time.Minute)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		at, err := committedTotal(ctx, k.Admin(), group, in)
		cancel()
		require.NoError(t, err)
		require.Less(t, at, int64(sc.records), "the run finished before event %d could interrupt it: slow the transform down", j)
		victim := j % sc.procs
		kill := (j%2 == 0 && kills < sc.kills) || restarts >= sc.restarts
		if kill {
			kills++
			ps.kill(victim)
			t.Logf("SIGKILL process %d at %.1f%% progress (%v)", victim, 100*float64(at)/float64(sc.records), time.Since(start).Round(time.Millisecond))
		} else {
			restarts++
			ps.stop(victim)
			t.Logf("clean restart of process %d at %.1f%% progress (%v)", victim, 100*float64(at)/float64(sc.records), time.Since(start).Round(time.Millisecond))
		}
		ps.start(victim)
	}
	waitCommitted(t, k, group, in, int64(sc.records), 3*time.Minute)
	t.Logf("all %d inputs committed after %v", sc.records, time.Since(start).Round(time.Millisecond))
	for i := range sc.procs {
		ps.stop(i)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	after, err := k.ReadCommitted(ctx, out)
	require.NoError(t, err)
	order := verifyMapped(t, after, sc.records, "out:rec-")

	seen := during.wait(t, sc.records, 30*time.Second)
	verifyMapped(t, seen, sc.records, "out:rec-")

	all := readUncommittedCount(t, k, out)
	t.Logf("read_committed: %d records, 0 duplicates, 0 lost; the log holds %d records, so %d were written by aborted transactions and never read",
		len(after), all, all-len(after))
	return order
}

// procs are the stage child processes of one test.
type procs struct {
	t    *testing.T
	cfg  childConfig
	mu   sync.Mutex
	cmds map[int]*exec.Cmd
	logs map[int]*lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (p *procs) start(i int) {
	p.t.Helper()
	c := p.cfg
	c.TxnID = fmt.Sprintf("%s-proc-%d", c.Group, i) // stable per process slot: a restart fences its zombie
	raw, err := json.Marshal(c)
	require.NoError(p.t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+string(raw))
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmds == nil {
		p.cmds, p.logs = map[int]*exec.Cmd{}, map[int]*lockedBuffer{}
	}
	if p.logs[i] == nil {
		p.logs[i] = &lockedBuffer{}
		name := i
		p.t.Cleanup(func() {
			if p.t.Failed() {
				p.t.Logf("process %d log:\n%s", name, p.logs[name].String())
			}
		})
	}
	cmd.Stdout, cmd.Stderr = p.logs[i], p.logs[i]
	require.NoError(p.t, cmd.Start())
	p.cmds[i] = cmd
}

// kill SIGKILLs process i and reaps it.
func (p *procs) kill(i int) {
	p.mu.Lock()
	cmd := p.cmds[i]
	delete(p.cmds, i)
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

// stop SIGTERMs process i and waits for its clean exit.
func (p *procs) stop(i int) {
	p.t.Helper()
	p.mu.Lock()
	cmd := p.cmds[i]
	delete(p.cmds, i)
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	require.NoError(p.t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(p.t, err, "process %d did not exit cleanly", i)
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		p.t.Fatalf("process %d did not stop within 30s of SIGTERM", i)
	}
}

func (p *procs) killAll() {
	p.mu.Lock()
	ids := make([]int, 0, len(p.cmds))
	for i := range p.cmds {
		ids = append(ids, i)
	}
	p.mu.Unlock()
	for _, i := range ids {
		p.kill(i)
	}
}

// watcher is a read_committed consumer that runs during the test.
type watcher struct {
	mu     sync.Mutex
	recs   []*kgo.Record
	cancel context.CancelFunc
	done   chan struct{}
}

func startWatcher(t *testing.T, k *kafkatest.Kafka, topic string) *watcher {
	cl, err := kgo.NewClient(append(k.Opts(), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			w.mu.Lock()
			w.recs = append(w.recs, fs.Records()...)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
		cl.Close()
	})
	return w
}

// wait waits until the watcher has n records (or timeout), stops it and
// returns what it read.
func (w *watcher) wait(t *testing.T, n int, timeout time.Duration) []*kgo.Record {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		got := len(w.recs)
		w.mu.Unlock()
		if got >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let a duplicate, if any, arrive too
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.recs
}

// readUncommittedCount counts every data record in topic, aborted ones too.
func readUncommittedCount(t *testing.T, k *kafkatest.Kafka, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := k.ReadUncommitted(ctx, topic)
	require.NoError(t, err)
	return len(recs)
}
