package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
)

// TestCrashSIGKILLWhileWriting kills a relay process with SIGKILL at random
// points while a writer inserts; a read_committed consumer then sees every
// committed event exactly once, in commit order per aggregate.
// Default: 5 kills over 5,000 events; OUTBOX_SOAK=1: 50 kills over 200,000.
func TestCrashSIGKILLWhileWriting(t *testing.T) {
	t.Parallel()
	b := setup(t)
	kills, total := scale(5, 50), scale(5000, 200000)
	pause := 4 * time.Millisecond
	if soak() {
		pause = 0
	}
	w := startWriter(t, b.url, 20, 5, pause, int64(total))
	c := b.startChild(t, b.childConfig())
	start := time.Now()
	for i := range kills {
		if rand.IntN(4) > 0 {
			b.waitActive(t, 0)
		}
		time.Sleep(time.Duration(50+rand.IntN(1200)) * time.Millisecond)
		c.kill()
		t.Logf("kill %d at %s: %d events written", i+1, time.Since(start).Round(time.Millisecond), w.committed.Load())
		c = b.startChild(t, b.childConfig())
	}
	<-w.done
	n := b.verifyExactlyOnce(t, 3*time.Minute)
	t.Logf("%d kills, %d events exactly once in %s", kills, n, time.Since(start).Round(time.Millisecond))
}

// TestCrashBetweenKafkaCommitAndConfirm exits the relay right after a Kafka
// commit and before its LSN reaches Postgres, several times: the restarted
// relay must skip what Kafka already has.
func TestCrashBetweenKafkaCommitAndConfirm(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	w := startWriter(t, b.url, 10, 5, 2*time.Millisecond, int64(scale(2000, 20000)))
	strictlyBehind := 0
	for round := range 4 {
		c := b.startChild(t, b.childConfig(), fmt.Sprintf("%s=%d", envCrashCommits, 2+rand.IntN(6)))
		require.Equal(t, 3, c.exitCode(t, 2*time.Minute), "round %d: the child should exit from the hook", round)
		// Postgres must never be ahead of Kafka: the slot is at or behind the
		// checkpoint. It is strictly behind when the last commit carried a new
		// confirm position (a commit may repeat the confirmed one).
		var slotLSN string
		require.NoError(t, b.conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&slotLSN))
		ck := b.lastCheckpoint(t)
		var atOrBehind, behind bool
		require.NoError(t, b.conn.QueryRow(ctx, `SELECT $1::pg_lsn <= $2::pg_lsn, $1::pg_lsn < $2::pg_lsn`, slotLSN, ck["confirm_lsn"]).Scan(&atOrBehind, &behind))
		require.True(t, atOrBehind, "round %d: slot at %s is ahead of the checkpoint confirm %v", round, slotLSN, ck["confirm_lsn"])
		if behind {
			strictlyBehind++
		}
	}
	require.Positive(t, strictlyBehind, "no round exited with a commit unconfirmed: the hook is not between commit and confirm")
	<-w.done
	b.startChild(t, b.childConfig())
	b.verifyExactlyOnce(t, 2*time.Minute)
}

// lastCheckpoint reads the newest checkpoint record of the test's slot.
func (b *testBundle) lastCheckpoint(t *testing.T) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := b.k.ReadCommitted(ctx, b.checkpoint)
	require.NoError(t, err)
	require.NotEmpty(t, recs)
	var ck map[string]any
	require.NoError(t, json.Unmarshal(recs[len(recs)-1].Value, &ck))
	return ck
}

// TestWalsenderTerminated terminates the relay's walsender with
// pg_terminate_backend every few hundred milliseconds while a writer inserts.
func TestWalsenderTerminated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	w := startWriter(t, b.url, 20, 5, 2*time.Millisecond, int64(scale(3000, 50000)))
	runRelay(t, b.config(t))
	var pid int32
	for range scale(6, 40) {
		pid = b.waitActive(t, pid)
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		var ok bool
		require.NoError(t, b.conn.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
	}
	<-w.done
	b.verifyExactlyOnce(t, 2*time.Minute)
}

// TestPostgresRestartImmediate stops Postgres with pg_ctl -m immediate and
// starts it again while the relay streams and a writer inserts. It restarts
// the server every test of this binary shares, so it does not run in parallel.
func TestPostgresRestartImmediate(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	w := startWriter(t, b.url, 20, 5, 2*time.Millisecond, int64(scale(3000, 30000)))
	runRelay(t, b.config(t))
	for i := range 2 {
		b.waitActive(t, 0)
		time.Sleep(time.Duration(500+rand.IntN(1000)) * time.Millisecond)
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		require.NoError(t, pgtest.Cluster(t).Restart(rctx, "immediate"), "restart %d", i)
		cancel()
		b.reconnect(t)
	}
	<-w.done
	b.verifyExactlyOnce(t, 2*time.Minute)
}

// reconnect replaces the test's own connection after a server restart.
func (b *testBundle) reconnect(t *testing.T) {
	t.Helper()
	_ = b.conn.Close(context.Background())
	var err error
	require.Eventually(t, func() bool {
		b.conn, err = pgx.Connect(context.Background(), b.url)
		return err == nil
	}, time.Minute, 100*time.Millisecond)
}

// TestIdleKeepalivesThenNewEvents is the Conduit #313 / go-pq-cdc #107 class
// of bug: a relay that confirms a keepalive's WAL end during an idle period
// skips what comes after. Without heartbeats the slot must not move on
// keepalives; after new events and a crash nothing is skipped. With
// heartbeats an idle outbox on a busy database does not pin WAL.
func TestIdleKeepalivesThenNewEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.conn.Exec(ctx, `CREATE TABLE noise (id bigserial PRIMARY KEY, pad text)`)
	require.NoError(t, err)
	noise := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); {
			_, err := b.conn.Exec(ctx, `INSERT INTO noise (pad) SELECT repeat('n', 200) FROM generate_series(1, 50)`)
			require.NoError(t, err)
			time.Sleep(5 * time.Millisecond)
		}
	}
	slotLSN := func() string {
		var s string
		require.NoError(t, b.conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&s))
		return s
	}

	cc := b.childConfig()
	cc.Heartbeat = time.Hour
	c := b.startChild(t, cc)
	w := startWriter(t, b.url, 5, 3, 0, 100)
	<-w.done
	b.waitRelayed(t, 100, time.Minute)
	time.Sleep(300 * time.Millisecond) // let the last confirm reach Postgres
	before := slotLSN()
	noise(3 * time.Second) // only keepalives reach the relay now
	require.Equal(t, before, slotLSN(), "the slot moved on keepalives alone")

	w = startWriter(t, b.url, 5, 3, 0, 100)
	<-w.done
	c.kill()
	c = b.startChild(t, cc)
	b.verifyExactlyOnce(t, time.Minute)
	c.kill()

	// With heartbeats the slot follows a busy database although the outbox is idle.
	cc.Heartbeat = 200 * time.Millisecond
	b.startChild(t, cc)
	noise(time.Second)
	var target string
	require.NoError(t, b.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&target))
	require.Eventually(t, func() bool {
		var past bool
		require.NoError(t, b.conn.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, b.slot, target).Scan(&past))
		return past
	}, 30*time.Second, 100*time.Millisecond, "heartbeats did not move the slot past %s", target)
	b.verifyExactlyOnce(t, time.Minute)
}

// insertRows inserts n rows of aggregate agg with sequence numbers from seq
// on, inside tx.
func insertRows(t *testing.T, tx pgx.Tx, agg string, seq, n int) {
	t.Helper()
	_, err := tx.Exec(context.Background(), `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload)
		SELECT uuidv7_like(), 'Order', $1, 'order.line', convert_to(json_build_object('agg', $1::text, 'seq', $2::int + i - 1, 'pad', repeat('l', 100))::text, 'UTF8')
		FROM generate_series(1, $3::int) AS i ORDER BY i`, agg, seq, n)
	require.NoError(t, err)
}

// createUUIDv7Func installs uuidv7_like(): a UUIDv7-shaped id (time prefix,
// random rest) so generated rows land in their day partition.
func (b *testBundle) createUUIDv7Func(t *testing.T) {
	t.Helper()
	_, err := b.conn.Exec(context.Background(), `CREATE FUNCTION uuidv7_like() RETURNS uuid LANGUAGE sql VOLATILE AS $$
		SELECT (lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7' ||
			substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid $$`)
	require.NoError(t, err)
}

// TestInterleavedLongShortTransactionsAcrossRestart commits short
// transactions while long ones stay open across relay crashes: the long ones,
// begun earlier, commit later and must appear once, after the shorts that
// committed before them.
func TestInterleavedLongShortTransactionsAcrossRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.createUUIDv7Func(t)
	open := func() (*pgx.Conn, pgx.Tx) {
		conn, err := pgx.Connect(ctx, b.url)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		return conn, tx
	}
	c := b.startChild(t, b.childConfig())
	_, long1 := open()
	b.logSlot(t, "before long-1")
	insertRows(t, long1, "long-1", 0, 50)
	b.logSlot(t, "after long-1 insert")
	w := startWriter(t, b.url, 10, 3, time.Millisecond, 300)
	<-w.done
	_, long2 := open()
	insertRows(t, long2, "long-2", 0, 30)
	insertRows(t, long1, "long-1", 50, 50)
	b.waitRelayed(t, 300, time.Minute)
	c.kill()
	b.logSlot(t, "after kill")
	require.NoError(t, long1.Commit(ctx))
	b.logSlot(t, "after long-1 commit")
	w = startWriter(t, b.url, 10, 3, time.Millisecond, 200)
	<-w.done
	c = b.startChild(t, b.childConfig())
	insertRows(t, long2, "long-2", 30, 30)
	time.Sleep(500 * time.Millisecond)
	c.kill()
	require.NoError(t, long2.Commit(ctx))
	b.startChild(t, b.childConfig())
	require.Equal(t, 300+100+200+60, b.verifyExactlyOnce(t, time.Minute))
}

// TestHugeTransactionSplitResume relays one Postgres transaction larger than
// a Kafka transaction may be: it is split, the checkpoint holds (commit LSN,
// rows), and relays killed in the middle resume inside it.
// Default: 20,000 events; OUTBOX_SOAK=1: 1,000,000.
func TestHugeTransactionSplitResume(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.createUUIDv7Func(t)
	n := scale(20000, 1000000)
	tx, err := b.conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload)
		SELECT uuidv7_like(), 'Order', 'huge-' || (i % 10), 'order.line',
			convert_to(json_build_object('agg', 'huge-' || (i % 10), 'seq', i / 10, 'pad', repeat('h', 400))::text, 'UTF8')
		FROM generate_series(0, $1::int - 1) AS i ORDER BY i`, n)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	cc := b.childConfig()
	cc.SplitEvents = scale(2000, 50000)
	cc.MaxBatch = cc.SplitEvents
	start := time.Now()
	for round := range 3 {
		c := b.startChild(t, cc, fmt.Sprintf("%s=%d", envCrashCommits, 2+round))
		require.Equal(t, 3, c.exitCode(t, 5*time.Minute), "round %d", round)
		ck := b.lastCheckpoint(t)
		require.Equal(t, false, ck["complete"], "round %d: the checkpoint should sit inside the transaction: %v", round, ck)
		t.Logf("round %d: checkpoint %v rows=%v", round, ck["commit_lsn"], ck["rows"])
	}
	c := b.startChild(t, cc)
	b.waitRelayed(t, n, 10*time.Minute)
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid)); err == nil {
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "VmHWM") {
				t.Logf("relay child peak RSS after a %d-event transaction: %s", n, strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")))
			}
		}
	}
	require.Equal(t, n, b.verifyExactlyOnce(t, 10*time.Minute))
	t.Logf("%d-event transaction relayed exactly once across 3 crashes in %s", n, time.Since(start).Round(time.Millisecond))
}

// TestStandbyTakesOver runs two relays on one slot: the second waits as a hot
// standby and takes over within seconds when the first is killed.
func TestStandbyTakesOver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startWriter(t, b.url, 10, 3, 3*time.Millisecond, 0)
	first := b.startChild(t, b.childConfig())
	pid := b.waitActive(t, 0)
	b.startChild(t, b.childConfig())
	time.Sleep(1500 * time.Millisecond)
	require.False(t, first.exited())
	first.kill()
	killed := time.Now()
	b.waitActive(t, pid)
	took := time.Since(killed)
	t.Logf("standby took over %s after the active relay was killed", took.Round(time.Millisecond))
	require.Less(t, took, 10*time.Second)
	time.Sleep(time.Second)
	w.stop()
	b.verifyExactlyOnce(t, time.Minute)
}

func (b *testBundle) logSlot(t *testing.T, what string) {
	var r, c, cur string
	require.NoError(t, b.conn.QueryRow(context.Background(), `SELECT coalesce(restart_lsn::text, ''), coalesce(confirmed_flush_lsn::text, ''), pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name=$1`, b.slot).Scan(&r, &c, &cur))
	t.Logf("%s: restart=%s confirmed=%s current=%s", what, r, c, cur)
}
