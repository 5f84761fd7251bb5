package relay_test

import (
	"context"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/relay"
)

// The recovery tests open a gap on purpose (rows committed before the slot
// existed, a slot dropped or recreated under load, WAL removed, a repair
// killed mid-run) and end, like every crash test, with each committed row
// exactly once to a read_committed consumer.

// dropSlot drops the bundle's slot once no walsender holds it.
func (b *testBundle) dropSlot(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, err := b.conn.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, b.slot)
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "drop slot %s once its walsender is gone", b.slot)
}

func (b *testBundle) republishConfig(t *testing.T, since time.Time) relay.RepublishConfig {
	cc := b.childConfig()
	cc.Since = since
	return cc.republishConfig(testLogger(t))
}

// countRepublished counts the topic's records marked by a repair.
func countRepublished(t *testing.T, b *testBundle) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := b.k.ReadCommitted(ctx, b.topic)
	require.NoError(t, err)
	n := 0
	for _, r := range recs {
		if header(r, envelope.HeaderRepublished) != "" {
			n++
		}
	}
	return n
}

// TestRepublishRowsFromBeforeTheSlot: rows committed before the slot existed
// are invisible to the stream; `outbox republish` publishes exactly them,
// once, while the relay streams newer rows, and a second run publishes
// nothing. A dry run lists them first.
func TestRepublishRowsFromBeforeTheSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	start := time.Now()
	b.dropSlot(t)
	before := startWriter(t, b.url, 5, 4, 0, int64(scale(300, 20000)))
	<-before.done
	_, err := b.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, b.slot)
	require.NoError(t, err)
	runRelay(t, b.config(t))
	b.waitActive(t, 0)
	live := startWriter(t, b.url, 5, 4, 2*time.Millisecond, 0)

	cfg := b.republishConfig(t, start)
	cfg.DryRun = true
	dry, err := relay.Republish(ctx, cfg)
	require.NoError(t, err)
	require.Len(t, dry.Missing, int(before.committed.Load()), "the dry run lists the rows from before the slot")
	require.Zero(t, dry.Published)

	cfg.DryRun = false
	sum, err := relay.Republish(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, int(before.committed.Load()), sum.Published)
	t.Logf("republish: %d rows in the window, %d already in Kafka, %d published in %d transactions, waited %s for the relay",
		sum.Rows, sum.InKafka, sum.Published, sum.Transactions, sum.WaitedFor)

	again, err := relay.Republish(ctx, cfg)
	require.NoError(t, err)
	require.Zero(t, again.Published, "a second run finds everything in Kafka")
	require.Equal(t, again.Records, again.InKafka)

	live.stop()
	n := b.verifyExactlyOnce(t, 2*time.Minute)
	require.Equal(t, int(before.committed.Load()), countRepublished(t, b))
	t.Logf("%d events exactly once; %d of them republished", n, before.committed.Load())
}

// TestRelaySinceOnFirstStart: a relay started with Since on a database whose
// writers are already live publishes the rows from before its slot, then
// streams, with writes going on throughout.
func TestRelaySinceOnFirstStart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := time.Now()
	b.dropSlot(t)
	w := startWriter(t, b.url, 5, 4, time.Millisecond, 0)
	require.Eventually(t, func() bool { return w.committed.Load() >= 300 }, time.Minute, 10*time.Millisecond)
	cfg := b.config(t)
	cfg.Since = start
	runRelay(t, cfg)
	b.waitRelayed(t, int(w.committed.Load()), time.Minute)
	w.stop()
	n := b.verifyExactlyOnce(t, 2*time.Minute)
	t.Logf("%d events exactly once; %d republished from before the slot", n, countRepublished(t, b))
	require.NotZero(t, countRepublished(t, b))
}

// TestSlotDroppedUnderLoadRepublish: the slot is dropped (round 1) or
// dropped and recreated by someone else (round 2) while the relay is
// SIGKILLed and writers keep writing; with OnSlotLoss=republish the next
// relay repairs the gap before it streams, so even per-aggregate order holds.
func TestSlotDroppedUnderLoadRepublish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	cc := b.childConfig()
	cc.OnSlotLoss = relay.SlotLossRepublish
	c := b.startChild(t, cc)
	w := startWriter(t, b.url, 8, 4, time.Millisecond, 0)
	for round := 1; round <= scale(2, 6); round++ {
		// Something committed first: a slot lost before the relay's first
		// checkpoint leaves no time to repair from (that is Since's job).
		require.Eventually(t, func() bool { return w.committed.Load() >= 100 }, time.Minute, 10*time.Millisecond)
		b.waitActive(t, 0)
		b.waitRelayed(t, int(w.committed.Load()), time.Minute)
		c.kill()
		b.dropSlot(t)
		gapStart := w.committed.Load()
		time.Sleep(500 * time.Millisecond)
		if round%2 == 0 {
			_, err := b.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, b.slot)
			require.NoError(t, err)
			time.Sleep(300 * time.Millisecond)
		}
		t.Logf("round %d: slot dropped%s; %d rows written into the gap", round, map[bool]string{true: " and recreated", false: ""}[round%2 == 0], w.committed.Load()-gapStart)
		c = b.startChild(t, cc)
	}
	b.waitRelayed(t, int(w.committed.Load()), time.Minute)
	w.stop()
	n := b.verifyExactlyOnce(t, 2*time.Minute)
	out, _ := os.ReadFile(c.log)
	require.Contains(t, string(out), "gap repaired")
	t.Logf("%d events exactly once; %d republished", n, countRepublished(t, b))
}

// TestSlotMovedStopSaysHowToRepair: with the default OnSlotLoss=stop a
// recreated slot stops the relay with the republish command; following it
// (republish from the time it names, then accept the slot's position)
// repairs the gap exactly once: the republish leaves the rows still in the
// stopped relay's slot to the relay.
func TestSlotMovedStopSaysHowToRepair(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	stop := runRelay(t, b.config(t))
	w := startWriter(t, b.url, 3, 3, 0, 60)
	<-w.done
	b.waitRelayed(t, 60, time.Minute)
	require.ErrorIs(t, stop(), context.Canceled)
	b.dropSlot(t)
	w = startWriter(t, b.url, 3, 3, 0, 40)
	<-w.done
	_, err := b.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, b.slot)
	require.NoError(t, err)
	err = runOnce(t, b.config(t), 30*time.Second)
	require.ErrorIs(t, err, relay.ErrSlotMoved)
	require.Contains(t, err.Error(), "outbox republish")
	require.Contains(t, err.Error(), "--on-slot-loss=republish")
	i := strings.Index(err.Error(), "--since ")
	require.Positive(t, i, "the error names the window: %v", err)
	since, err2 := time.Parse(time.RFC3339, strings.Trim(strings.Fields(err.Error()[i+len("--since "):])[0], "`"))
	require.NoError(t, err2)
	t.Log(err)

	// Rows written after the slot was recreated are in its stream: the
	// republish leaves them to the relay, which has not started yet.
	w = startWriter(t, b.url, 3, 3, 0, 15)
	<-w.done
	sum, err := relay.Republish(ctx, b.republishConfig(t, since))
	require.NoError(t, err)
	require.Equal(t, 40, sum.Published, "the 40 rows written while the slot was gone")
	require.Equal(t, 15, sum.Pending, "the 15 rows in the recreated slot's stream")

	cfg := b.config(t)
	cfg.AcceptSlotPosition = true
	runRelay(t, cfg)
	b.waitActive(t, 0)
	w = startWriter(t, b.url, 3, 3, time.Millisecond, 0)
	again, err := relay.Republish(ctx, b.republishConfig(t, since))
	require.NoError(t, err)
	require.Zero(t, again.Published, "with the relay streaming, nothing is missing")
	w.stop()
	b.verifyExactlyOnce(t, 2*time.Minute)
}

// TestRepublishKilledMidRunThenRerun: a republish that exits after its second
// Kafka commit, then one SIGKILLed at a random moment, then a full run: the
// result is every row exactly once.
func TestRepublishKilledMidRunThenRerun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	start := time.Now()
	b.dropSlot(t)
	w := startWriter(t, b.url, 6, 5, 0, int64(scale(2000, 50000)))
	<-w.done
	_, err := b.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, b.slot)
	require.NoError(t, err)
	runRelay(t, b.config(t))
	b.waitActive(t, 0)

	cc := b.childConfig()
	cc.Republish, cc.Since, cc.MaxBatch = true, start, 200
	c := b.startChild(t, cc, envCrashCommits+"=2")
	require.Equal(t, 3, c.exitCode(t, 2*time.Minute), "the republish exits after its second commit")
	first := countRepublished(t, b)
	require.GreaterOrEqual(t, first, 400)

	// The second is SIGKILLed while it publishes: after it has read the
	// window, at a random moment.
	c = b.startChild(t, cc)
	require.Eventually(t, func() bool {
		out, _ := os.ReadFile(c.log)
		return strings.Contains(string(out), "republish: window read") || c.exited()
	}, time.Minute, 5*time.Millisecond)
	time.Sleep(time.Duration(rand.IntN(scale(60, 300))) * time.Millisecond)
	c.kill()
	second := countRepublished(t, b)

	sum, err := relay.Republish(ctx, b.republishConfig(t, start))
	require.NoError(t, err)
	require.Equal(t, int(w.committed.Load()), sum.InKafka+sum.Published)
	t.Logf("crash after 2 commits: %d republished; SIGKILL: %d; final run: %d already in Kafka, %d published", first, second, sum.InKafka, sum.Published)
	b.verifyExactlyOnce(t, 2*time.Minute)
}

// TestWALLostRepairedExactlyOnce: Postgres removes WAL the stopped relay
// still needed (max_slot_wal_keep_size). The default relay stops with the
// repair commands; with OnSlotLoss=republish it recreates the slot and
// publishes the rows the lost WAL held, exactly once.
func TestWALLostRepairedExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{DisableContainer: true, Settings: map[string]string{
		"max_slot_wal_keep_size": "1MB", "max_wal_size": "32MB", "min_wal_size": "32MB", "wal_keep_size": "0",
	}})
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = c.Stop(sctx)
	})
	url, err := c.CreateDatabase(ctx, "wallost_repair")
	require.NoError(t, err)
	m, err := migrations.Open(ctx, url, "outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	k := kafkatest.New(t)
	b := &testBundle{url: url, k: k, topic: k.Topic("wallost-events", 3, nil),
		recordTopic: k.Topic("wallost-records", 3, map[string]string{"cleanup.policy": "compact"}),
		checkpoint:  k.Topic("wallost-ckpt", 1, map[string]string{"cleanup.policy": "compact"}), slot: "lost_slot"}
	b.conn, err = pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.conn.Close(context.Background()) })

	stop := runRelay(t, b.config(t))
	b.waitActive(t, 0)
	w := startWriter(t, url, 4, 3, 0, 100)
	<-w.done
	b.waitRelayed(t, 100, time.Minute)
	require.ErrorIs(t, stop(), context.Canceled)

	// Rows the relay never sees, then enough WAL to lose them.
	w = startWriter(t, url, 4, 3, 0, 200)
	<-w.done
	_, err = b.conn.Exec(ctx, `CREATE TABLE filler (pad text)`)
	require.NoError(t, err)
	var status string
	require.Eventually(t, func() bool {
		for range 4 {
			_, err = b.conn.Exec(ctx, `INSERT INTO filler SELECT repeat('f', 1000) FROM generate_series(1, 5000)`)
			require.NoError(t, err)
			_, err = b.conn.Exec(ctx, `SELECT pg_switch_wal()`)
			require.NoError(t, err)
		}
		_, err = b.conn.Exec(ctx, `CHECKPOINT`)
		require.NoError(t, err)
		require.NoError(t, b.conn.QueryRow(ctx, `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&status))
		return status == "lost"
	}, 2*time.Minute, 10*time.Millisecond, "slot never lost its WAL (wal_status %q)", status)

	err = runOnce(t, b.config(t), 30*time.Second)
	require.ErrorIs(t, err, relay.ErrWALLost)
	require.Contains(t, err.Error(), "outbox republish")
	require.Contains(t, err.Error(), "--since 20")
	t.Log(err)

	cfg := b.config(t)
	cfg.OnSlotLoss = relay.SlotLossRepublish
	runRelay(t, cfg)
	b.waitActive(t, 0)
	w = startWriter(t, url, 4, 3, time.Millisecond, 0)
	b.waitRelayed(t, 400, time.Minute)
	w.stop()
	b.verifyExactlyOnce(t, 2*time.Minute)
	require.Equal(t, 200, countRepublished(t, b), "exactly the rows the lost WAL held")
}

// TestTimelineSwitch reads where a timeline ended from a history file as
// TIMELINE_HISTORY returns it (this one after two promotions).
func TestTimelineSwitch(t *testing.T) {
	h := []byte("1\t0/3000060\tno recovery target specified\n\n2\t0/5A2B8C0\tno recovery target specified\n")
	at, err := relay.TimelineSwitch(h, 2)
	require.NoError(t, err)
	require.Equal(t, "0/5A2B8C0", at.String())
	at, err = relay.TimelineSwitch(h, 1)
	require.NoError(t, err)
	require.Equal(t, "0/3000060", at.String())
	_, err = relay.TimelineSwitch(h, 7)
	require.ErrorContains(t, err, "timeline 7 is not in this server's history")
}
