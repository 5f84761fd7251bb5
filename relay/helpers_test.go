package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/relay"
)

// soak reports whether the full-scale crash tests were asked for.
func soak() bool { return os.Getenv("OUTBOX_SOAK") == "1" }

// scale picks the default (small) or soak figure.
func scale(small, full int) int {
	if soak() {
		return full
	}
	return small
}

// testBundle is one test's Postgres database, Kafka cluster and topics.
type testBundle struct {
	url         string
	k           *kafkatest.Kafka
	topic       string // every event row is routed here
	recordTopic string // every record row is routed here
	checkpoint  string
	slot        string
	conn        *pgx.Conn // for the test's own queries; not safe across goroutines
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	m, err := migrations.Open(ctx, url, "outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	k := kafkatest.New(t)
	b := &testBundle{
		url:         url,
		k:           k,
		topic:       k.Topic("relay-events", 3, nil),
		recordTopic: k.Topic("relay-records", 3, map[string]string{"cleanup.policy": "compact"}),
		checkpoint:  k.Topic("relay-ckpt", 1, map[string]string{"cleanup.policy": "compact"}),
		slot:        fmt.Sprintf("relay_%d_%08x", os.Getpid(), rand.Uint32()),
	}
	b.conn, err = pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.conn.Close(context.Background()) })
	// The slot must exist before the first event is written: rows committed
	// before it are not in its stream.
	_, err = b.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, b.slot)
	require.NoError(t, err)
	return b
}

func (b *testBundle) childConfig() childConfig {
	return childConfig{URL: b.url, Brokers: strings.Join(b.k.Brokers, ","), Schema: "outbox", Slot: b.slot,
		Checkpoint: b.checkpoint, Topic: b.topic, RecordTopic: b.recordTopic, MaxBatch: 500, SplitEvents: 5000,
		Heartbeat: 500 * time.Millisecond}
}

func (b *testBundle) config(t *testing.T) relay.Config {
	return b.childConfig().relayConfig(testLogger(t))
}

func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("RELAY_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// runRelay runs a relay in this process until the returned stop is called;
// stop returns Run's error.
func runRelay(t *testing.T, cfg relay.Config) (stop func() error) {
	t.Helper()
	r, err := relay.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("relay did not stop within 30s")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// child is a relay in a child process (the test binary in child mode).
type child struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (b *testBundle) startChild(t *testing.T, cc childConfig, env ...string) *child {
	t.Helper()
	dir := os.Getenv("RELAY_TEST_LOGDIR") // keep child logs for debugging
	if dir == "" {
		dir = t.TempDir()
	}
	logPath := filepath.Join(dir, fmt.Sprintf("child-%d-%08x.log", time.Now().UnixNano(), rand.Uint32()))
	f, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), envChild+"=1", envChildConfig+"="+cc.encode()), env...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		_ = f.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			lines := strings.Split(string(out), "\n")
			t.Logf("child %d log (tail):\n%s", cmd.Process.Pid, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	})
	return c
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// exitCode waits for the child to exit and returns its exit code.
func (c *child) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("child did not exit within %s", timeout)
	}
	return c.cmd.ProcessState.ExitCode()
}

// waitActive waits until some connection streams from the slot, other than
// the walsender pid notPID, and returns its pid.
func (b *testBundle) waitActive(t *testing.T, notPID int32) int32 {
	t.Helper()
	var pid int32
	require.Eventually(t, func() bool {
		err := b.conn.QueryRow(context.Background(),
			// A walsender, not the backend still creating the slot.
			`SELECT s.active_pid FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
			WHERE s.slot_name = $1 AND s.active`, b.slot).Scan(&pid)
		return err == nil && pid != 0 && pid != notPID
	}, 60*time.Second, 20*time.Millisecond, "slot %s never became active", b.slot)
	return pid
}

// payload is what test rows carry: the aggregate and its sequence number.
type payload struct {
	Agg string `json:"agg"`
	Seq int    `json:"seq"`
	Pad string `json:"pad,omitempty"`
}

var writers atomic.Int64

// writer inserts outbox rows in transactions of 1..maxRows rows over a set of
// aggregates; each aggregate's rows carry consecutive sequence numbers in
// commit order.
type writer struct {
	url        string
	aggregates int
	maxRows    int
	pause      time.Duration
	pad        string
	limit      int64 // stop after this many rows; 0 = until stopped

	prefix    string // of aggregate ids, unique per writer
	seq       map[string]int
	committed atomic.Int64
	stopCh    chan struct{}
	done      chan struct{}
}

func startWriter(t *testing.T, url string, aggregates, maxRows int, pause time.Duration, limit int64) *writer {
	w := &writer{url: url, aggregates: aggregates, maxRows: maxRows, pause: pause, limit: limit, pad: strings.Repeat("x", 100),
		prefix: fmt.Sprintf("w%d-", writers.Add(1)), seq: map[string]int{}, stopCh: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *writer) stop() int64 {
	select {
	case <-w.stopCh:
	default:
		close(w.stopCh)
	}
	<-w.done
	return w.committed.Load()
}

func (w *writer) stopped() bool {
	select {
	case <-w.stopCh:
		return true
	default:
		return false
	}
}

func (w *writer) run() {
	defer close(w.done)
	ctx := context.Background()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(ctx)
		}
	}()
	for !w.stopped() && (w.limit == 0 || w.committed.Load() < w.limit) {
		if conn == nil || conn.IsClosed() {
			c, err := pgx.Connect(ctx, w.url)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			conn = c
		}
		n := 1 + rand.IntN(w.maxRows)
		if w.limit > 0 {
			n = int(min(int64(n), w.limit-w.committed.Load()))
		}
		ids := make([]uuid.UUID, n)
		next := map[string]int{}
		batch := &pgx.Batch{}
		for i := range n {
			agg := fmt.Sprintf("%sagg-%03d", w.prefix, rand.IntN(w.aggregates))
			s, ok := next[agg]
			if !ok {
				s = w.seq[agg]
			}
			next[agg] = s + 1
			ids[i] = uuid.Must(uuid.NewV7())
			p, _ := json.Marshal(payload{Agg: agg, Seq: s, Pad: w.pad})
			batch.Queue(`INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES ($1, 'Order', $2, 'order.changed', $3)`,
				ids[i], agg, p)
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() })
		if err != nil {
			// The outcome of a failed commit is unknown: ask the database.
			_ = conn.Close(ctx)
			conn = nil
			ok, known := w.exists(ctx, ids[0])
			for !known && !w.stopped() {
				time.Sleep(100 * time.Millisecond)
				ok, known = w.exists(ctx, ids[0])
			}
			if !ok {
				continue
			}
		}
		for agg, s := range next {
			w.seq[agg] = s
		}
		w.committed.Add(int64(n))
		if w.pause > 0 {
			time.Sleep(w.pause)
		}
	}
}

func (w *writer) exists(ctx context.Context, id uuid.UUID) (exists, known bool) {
	c, err := pgx.Connect(ctx, w.url)
	if err != nil {
		return false, false
	}
	defer c.Close(ctx)
	err = c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox.events WHERE event_id = $1)`, id).Scan(&exists)
	return exists, err == nil
}

// readAll waits until the topic holds want records, or timeout, and returns
// what it holds.
func (b *testBundle) readAll(t *testing.T, want int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		recs, err := b.k.ReadCommitted(ctx, b.topic)
		cancel()
		require.NoError(t, err)
		if len(recs) >= want || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitRelayed waits until the topic holds at least want committed records.
func (b *testBundle) waitRelayed(t *testing.T, want int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		recs, err := b.k.ReadCommitted(ctx, b.topic)
		cancel()
		require.NoError(t, err)
		if len(recs) >= want {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d events reached Kafka within %s", len(recs), want, timeout)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// verifyExactlyOnce checks that every outbox row in the database is in the
// topic exactly once (read_committed), nothing else is, and each aggregate's
// events appear in commit order (consecutive sequence numbers).
func (b *testBundle) verifyExactlyOnce(t *testing.T, timeout time.Duration) int {
	t.Helper()
	ctx := context.Background()
	rows, err := b.conn.Query(ctx, `SELECT event_id::text, aggregate_id FROM outbox.events`)
	require.NoError(t, err)
	var ids []string
	aggOf := map[string]string{}
	for rows.Next() {
		var id, agg string
		require.NoError(t, rows.Scan(&id, &agg))
		ids = append(ids, id)
		aggOf[id] = agg
	}
	require.NoError(t, rows.Err())
	b.readAll(t, len(ids), timeout)
	// Give a duplicate the chance to show up.
	time.Sleep(500 * time.Millisecond)
	recs := b.readAll(t, len(ids), timeout)

	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	seen := make(map[string]int, len(recs))
	next := map[string]int{}
	var dups, unknown, disorder int
	for _, r := range recs {
		id := header(r, envelope.HeaderEventID)
		seen[id]++
		if seen[id] == 2 {
			dups++
		}
		if !want[id] {
			unknown++
		}
		var p payload
		require.NoError(t, json.Unmarshal(r.Value, &p))
		require.Equal(t, p.Agg, string(r.Key))
		if seen[id] == 1 {
			if p.Seq != next[p.Agg] {
				disorder++
				if disorder <= 5 {
					t.Errorf("aggregate %s: got seq %d, want %d (event %s, %s/%d@%d)", p.Agg, p.Seq, next[p.Agg], id, r.Topic, r.Partition, r.Offset)
				}
			}
			next[p.Agg] = p.Seq + 1
		}
	}
	missing := 0
	missingAggs := map[string]int{}
	for id := range want {
		if seen[id] == 0 {
			missing++
			missingAggs[aggOf[id]]++
		}
	}
	if missing > 0 {
		t.Logf("missing events per aggregate: %v", missingAggs)
	}
	require.Zero(t, dups, "duplicated events")
	require.Zero(t, unknown, "events in Kafka that are not in the outbox")
	require.Zero(t, missing, "outbox events missing from Kafka")
	require.Zero(t, disorder, "events out of commit order per aggregate")
	require.Len(t, recs, len(ids))
	return len(ids)
}
