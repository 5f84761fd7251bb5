package relay_test

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/relay"
)

// TestFailoverRepublishesTheGap: a primary and its streaming physical standby;
// the relay (OnSlotLoss=republish) and the writers use one multi-host URL with
// target_session_attrs=read-write. Under load the primary is SIGKILLed and the
// standby promoted; the relay follows, finds its logical slot missing (Postgres
// 15 does not copy it to a standby), recreates it and repairs the gap before
// it streams. Every row on the new primary must then be in Kafka exactly once
// and in order per aggregate. Rows the old primary committed and never sent to
// the standby (asynchronous replication) are gone from the database; the ones
// the relay had already published are counted, not failed: that loss is
// Postgres's (docs/operations.md says how synchronous_commit closes it).
// OUTBOX_SOAK=1 fails over 5 times, back and forth.
func TestFailoverRepublishesTheGap(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	a, err := pgtest.Start(ctx, pgcluster.Config{DisableContainer: true})
	require.NoError(t, err)
	t.Cleanup(func() { stopCluster(a) })
	dbURL, err := a.CreateDatabase(ctx, "failover")
	require.NoError(t, err)
	m, err := migrations.Open(ctx, dbURL, "outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	s, err := a.StartStandby(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { stopCluster(s) })
	multi := pgcluster.MultiHostURL("failover", a, s)

	k := kafkatest.New(t)
	b := &testBundle{url: multi, k: k, topic: k.Topic("failover-events", 3, nil),
		recordTopic: k.Topic("failover-records", 3, map[string]string{"cleanup.policy": "compact"}),
		checkpoint:  k.Topic("failover-ckpt", 1, map[string]string{"cleanup.policy": "compact"}), slot: "failover_relay"}
	cc := b.childConfig()
	cc.OnSlotLoss, cc.Since = relay.SlotLossRepublish, start
	c := b.startChild(t, cc)
	w := startWriter(t, multi, 8, 4, 2*time.Millisecond, 0)

	primary, standby := a, s
	var repaired []int
	for round := 1; round <= scale(1, 5); round++ {
		require.Eventually(t, func() bool { return w.committed.Load() >= int64(300*round) }, 2*time.Minute, 10*time.Millisecond)
		// The relay streams (its repairs done) before the primary dies; a
		// lost async tail of an earlier failover is never relayed, hence the slack.
		b.waitRelayed(t, int(w.committed.Load())-20, 2*time.Minute)
		require.NoError(t, primary.Kill())
		killed := time.Now()
		require.NoError(t, standby.Promote(ctx))
		promoted := time.Now()
		// Streaming again: an event written after the promotion is in Kafka.
		require.Eventually(t, func() bool { return writtenAfter(b.readAll(t, 0, 0), promoted) }, 2*time.Minute, 50*time.Millisecond,
			"round %d: no event written after the promotion reached Kafka", round)
		t.Logf("round %d: primary :%d killed, standby :%d promoted in %s; new events in Kafka %s after the promotion",
			round, primary.Port(), standby.Port(), promoted.Sub(killed).Round(time.Millisecond), time.Since(promoted).Round(time.Millisecond))
		if round < scale(1, 5) {
			require.NoError(t, primary.RebuildAsStandbyOf(ctx, standby))
			primary, standby = standby, primary
		}
	}
	time.Sleep(time.Second)
	w.stop()

	conn, err := pgx.Connect(ctx, multi)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	b.conn = conn
	onPrimary, lostTail := verifyAfterFailover(t, b)
	out, err := os.ReadFile(c.log)
	require.NoError(t, err)
	for _, m := range regexp.MustCompile(`gap repaired.*republished=(\d+)`).FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[1])
		repaired = append(repaired, n)
	}
	require.GreaterOrEqual(t, len(repaired), 1+scale(1, 5), "one repair at the first start (--since) and one per failover:\n%s", out)
	t.Logf("%d failovers: the writers saw %d commits, %d rows are on the last primary (the rest lost with the async tail), all exactly once in Kafka; repairs republished %v rows; %d events in Kafka are of the lost tail",
		scale(1, 5), w.committed.Load(), onPrimary, repaired, lostTail)
}

// writtenAfter reports whether recs hold an event whose UUIDv7 was made after at.
func writtenAfter(recs []*kgo.Record, at time.Time) bool {
	for _, r := range recs {
		id, err := uuid.Parse(header(r, envelope.HeaderEventID))
		if err != nil {
			continue
		}
		if sec, nsec := id.Time().UnixTime(); time.Unix(sec, nsec).After(at) {
			return true
		}
	}
	return false
}

func stopCluster(c *pgcluster.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = c.Stop(ctx)
}

// verifyAfterFailover checks that every row of the events table is in the
// topic exactly once, with each aggregate's sequence numbers increasing (a
// lost async tail leaves gaps, never disorder), and returns how many records
// name an event the table does not have.
func verifyAfterFailover(t *testing.T, b *testBundle) (rows, unknownRecords int) {
	t.Helper()
	ctx := context.Background()
	q, err := b.conn.Query(ctx, `SELECT event_id::text FROM outbox.events`)
	require.NoError(t, err)
	want := map[string]bool{}
	for q.Next() {
		var id string
		require.NoError(t, q.Scan(&id))
		want[id] = true
	}
	require.NoError(t, q.Err())
	recs := b.readAll(t, len(want), 2*time.Minute)
	seen := map[string]int{}
	last := map[string]int{}
	var dups, unknown, disorder, missing int
	for _, r := range recs {
		id := header(r, envelope.HeaderEventID)
		seen[id]++
		if seen[id] > 1 {
			dups++
			continue
		}
		if !want[id] {
			unknown++
			continue
		}
		var p payload
		require.NoError(t, json.Unmarshal(r.Value, &p))
		if prev, ok := last[p.Agg]; ok && p.Seq <= prev {
			disorder++
			if disorder <= 5 {
				t.Errorf("aggregate %s: seq %d after %d (%s/%d@%d)", p.Agg, p.Seq, prev, r.Topic, r.Partition, r.Offset)
			}
		}
		last[p.Agg] = p.Seq
	}
	var some []string
	for id := range want {
		if seen[id] == 0 {
			missing++
			if len(some) < 5 {
				some = append(some, id)
			}
		}
	}
	require.Zero(t, dups, "duplicated events")
	require.Zero(t, missing, "rows of the new primary missing from Kafka, e.g. %s", strings.Join(some, ", "))
	require.Zero(t, disorder, "events out of order per aggregate")
	return len(want), unknown
}
