package deadletter_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/ops/deadletter"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// The crash test re-runs this test binary as a child that replays and then
// hangs mid-transaction until the parent kills it.
const (
	envChild      = "DEADLETTER_TEST_CHILD"
	envChildKafka = "DEADLETTER_TEST_CHILD_BROKERS"
	envChildTopic = "DEADLETTER_TEST_CHILD_TOPIC"
	childStopAt   = 7 // records handed to the producer before the child hangs
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(replayChild())
	}
	os.Exit(kafkatest.Main(m))
}

// replayChild replays in batches of 5 and stops inside the second batch: the
// first batch is committed, the second is produced but its transaction open.
func replayChild() int {
	opts := []kgo.Opt{kgo.SeedBrokers(strings.Split(os.Getenv(envChildKafka), ",")...)}
	_, err := deadletter.Replay(context.Background(), opts, deadletter.ReplayConfig{
		Topic:     os.Getenv(envChildTopic),
		BatchSize: 5,
		Progress: func(done, _ int) {
			if done == childStopAt {
				fmt.Println("READY")
				select {} // wait to be killed
			}
		},
	})
	fmt.Fprintln(os.Stderr, "child: replay returned:", err)
	return 1
}

type testBundle struct {
	k                  *kafkatest.Kafka
	origin, retry, dlq string
	ledger, quarantine string
	opts               []kgo.Opt
}

func setup(t *testing.T) (*testBundle, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	k := kafkatest.New(t)
	b := &testBundle{k: k, opts: k.Opts()}
	b.origin = k.Topic("origin", 2, nil)
	b.retry = k.Topic("origin-retry", 2, nil)
	b.dlq = k.Topic("dlq", 2, nil)
	b.ledger = b.dlq + ".replayed"
	k.CreateTopic(b.ledger, 1, map[string]string{"cleanup.policy": "compact"})
	b.quarantine = b.dlq + ".quarantine"
	k.CreateTopic(b.quarantine, 1, nil)
	return b, ctx
}

// deadLetters writes n dead letters from the origin topic; even ones failed
// with "http 503", odd ones with "validation: amount". Dead letter i has key
// order-i, event id ev-i and the given replay count header (if > 0).
func (b *testBundle) deadLetters(ctx context.Context, t *testing.T, n, replayCount int) {
	t.Helper()
	cl, err := kgo.NewClient(b.opts...)
	require.NoError(t, err)
	defer cl.Close()
	for i := range n {
		msg := "http 503 from payment API"
		if i%2 == 1 {
			msg = "validation: amount must be positive"
		}
		dl := envelope.DeadLetter{OriginTopic: b.origin, OriginPartition: int32(i % 2), OriginOffset: int64(i),
			Stage: "sink", StageName: "payment", ErrorClass: "http_error", ErrorMessage: msg, Attempt: 5,
			History: []envelope.Attempt{{N: 1, At: time.Now(), Status: 503}}}
		r := &kgo.Record{Topic: b.dlq, Key: []byte(fmt.Sprintf("order-%d", i)), Value: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: envelope.HeaderEventID, Value: []byte(fmt.Sprintf("ev-%d", i))})
		if replayCount > 0 {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: envelope.HeaderReplayCount, Value: []byte(fmt.Sprint(replayCount))})
		}
		for _, h := range dl.Headers() {
			r.Headers = append(r.Headers, kgo.RecordHeader(h))
		}
		require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
	}
}

// eventIDs reads topic with read_committed and counts records per event id.
func (b *testBundle) eventIDs(ctx context.Context, t *testing.T, topic string) map[string]int {
	t.Helper()
	recs, err := b.k.ReadCommitted(ctx, topic)
	require.NoError(t, err)
	ids := map[string]int{}
	for _, r := range recs {
		l := deadletter.Decode(r)
		ids[l.EventID]++
	}
	return ids
}

func requireOnce(t *testing.T, ids map[string]int, n int) {
	t.Helper()
	require.Len(t, ids, n, "%v", ids)
	for id, c := range ids {
		require.Equal(t, 1, c, "event %s replayed %d times", id, c)
	}
}

func TestReplayTwiceReplaysOnce(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.deadLetters(ctx, t, 10, 0)
	cfg := deadletter.ReplayConfig{Topic: b.dlq, Filter: deadletter.Filter{ErrorContains: "HTTP 503"}}

	res, err := deadletter.Replay(ctx, b.opts, cfg)
	require.NoError(t, err)
	require.Equal(t, 5, res.Replayed)
	recs, err := b.k.ReadCommitted(ctx, b.origin)
	require.NoError(t, err)
	require.Len(t, recs, 5)
	for _, r := range recs {
		l := deadletter.Decode(r)
		require.Equal(t, 1, l.ReplayCount)
		require.NotEmpty(t, l.EventID)
		require.Empty(t, l.DeadLetter.OriginTopic, "dead-letter headers are dropped on replay")
		require.Contains(t, string(r.Key), "order-")
	}

	res, err = deadletter.Replay(ctx, b.opts, cfg)
	require.NoError(t, err)
	require.Zero(t, res.Replayed)
	require.Equal(t, 5, res.AlreadyReplayed)
	requireOnce(t, b.eventIDs(ctx, t, b.origin), 5)

	// Without the filter, only the other half is left to replay.
	res, err = deadletter.Replay(ctx, b.opts, deadletter.ReplayConfig{Topic: b.dlq})
	require.NoError(t, err)
	require.Equal(t, 5, res.Replayed)
	require.Equal(t, 5, res.AlreadyReplayed)
	requireOnce(t, b.eventIDs(ctx, t, b.origin), 10)
}

func TestReplayKilledMidwayNoDuplicates(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.deadLetters(ctx, t, 12, 0)

	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), envChild+"=1", envChildKafka+"="+strings.Join(b.k.Brokers, ","), envChildTopic+"="+b.dlq)
	stdout, err := child.StdoutPipe()
	require.NoError(t, err)
	child.Stderr = os.Stderr
	require.NoError(t, child.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "child ended before reaching the middle of its replay")
	require.Equal(t, "READY\n", line)
	require.NoError(t, child.Process.Kill())
	_ = child.Wait()

	// The first batch (5) is committed; the second is open and dies with the child.
	requireOnce(t, b.eventIDs(ctx, t, b.origin), 5)

	res, err := deadletter.Replay(ctx, b.opts, deadletter.ReplayConfig{Topic: b.dlq, BatchSize: 5})
	require.NoError(t, err)
	require.Equal(t, 7, res.Replayed)
	require.Equal(t, 5, res.AlreadyReplayed)
	requireOnce(t, b.eventIDs(ctx, t, b.origin), 12)
}

func TestReplayCancelledMidwayNoDuplicates(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.deadLetters(ctx, t, 12, 0)

	rctx, cancel := context.WithCancel(ctx)
	_, err := deadletter.Replay(rctx, b.opts, deadletter.ReplayConfig{Topic: b.dlq, BatchSize: 5,
		Progress: func(done, _ int) {
			if done == childStopAt {
				cancel()
			}
		}})
	require.ErrorIs(t, err, context.Canceled)
	requireOnce(t, b.eventIDs(ctx, t, b.origin), 5)

	res, err := deadletter.Replay(ctx, b.opts, deadletter.ReplayConfig{Topic: b.dlq, BatchSize: 5})
	require.NoError(t, err)
	require.Equal(t, 7, res.Replayed)
	requireOnce(t, b.eventIDs(ctx, t, b.origin), 12)
}

func TestReplayQuarantinesPastMax(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.deadLetters(ctx, t, 2, 3)

	res, err := deadletter.Replay(ctx, b.opts, deadletter.ReplayConfig{Topic: b.dlq, MaxReplays: 3})
	require.NoError(t, err)
	require.Equal(t, 2, res.Quarantined)
	require.Zero(t, res.Replayed)
	recs, err := b.k.ReadCommitted(ctx, b.quarantine)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	l := deadletter.Decode(recs[0])
	require.Equal(t, 3, l.ReplayCount)
	require.Equal(t, b.origin, l.DeadLetter.OriginTopic, "quarantine keeps the dead-letter headers")
	origin, err := b.k.ReadCommitted(ctx, b.origin)
	require.NoError(t, err)
	require.Empty(t, origin)
}

// TestReplayQuarantineOnDemand: Quarantine sends the chosen letters to the
// quarantine topic whatever their replay count (a dry run first changes
// nothing), and a later replay finds them in the ledger and leaves them.
func TestReplayQuarantineOnDemand(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.deadLetters(ctx, t, 2, 0)
	var first deadletter.Position
	require.NoError(t, deadletter.List(ctx, b.opts, b.dlq, deadletter.Filter{Key: "order-0"}, func(l deadletter.Letter) error {
		first = l.Position()
		return nil
	}))
	cfg := deadletter.ReplayConfig{Topic: b.dlq, Quarantine: true, DryRun: true, Filter: deadletter.Filter{Positions: []deadletter.Position{first}}}

	res, err := deadletter.Replay(ctx, b.opts, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, res.Quarantined)
	require.Equal(t, deadletter.ActionQuarantine, res.Outcomes[0].Action)
	require.Equal(t, b.quarantine, res.Outcomes[0].To)
	recs, err := b.k.ReadCommitted(ctx, b.quarantine)
	require.NoError(t, err)
	require.Empty(t, recs, "a dry run quarantines nothing")

	cfg.DryRun = false
	res, err = deadletter.Replay(ctx, b.opts, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, res.Quarantined)
	require.Zero(t, res.Replayed)
	recs, err = b.k.ReadCommitted(ctx, b.quarantine)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	l := deadletter.Decode(recs[0])
	require.Equal(t, "ev-0", l.EventID)
	require.Zero(t, l.ReplayCount, "quarantine does not count as a replay")
	require.Equal(t, b.origin, l.DeadLetter.OriginTopic, "quarantine keeps the dead-letter headers")

	// A plain replay of everything: the quarantined letter is in the ledger.
	res, err = deadletter.Replay(ctx, b.opts, deadletter.ReplayConfig{Topic: b.dlq})
	require.NoError(t, err)
	require.Equal(t, 1, res.AlreadyReplayed)
	require.Equal(t, 1, res.Replayed)
	require.Equal(t, map[string]int{"ev-1": 1}, b.eventIDs(ctx, t, b.origin), "only the other letter went back to its origin")
}

func TestReplayToRetryTierDryRunAndFilters(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.deadLetters(ctx, t, 6, 1)

	cfg := deadletter.ReplayConfig{Topic: b.dlq, To: b.retry, DryRun: true,
		Filter: deadletter.Filter{Key: "order-2", OriginTopic: b.origin}}
	res, err := deadletter.Replay(ctx, b.opts, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	require.Equal(t, b.retry, res.Outcomes[0].To)
	recs, err := b.k.ReadCommitted(ctx, b.retry)
	require.NoError(t, err)
	require.Empty(t, recs, "dry run produces nothing")

	cfg.DryRun = false
	res, err = deadletter.Replay(ctx, b.opts, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	recs, err = b.k.ReadCommitted(ctx, b.retry)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, 2, deadletter.Decode(recs[0]).ReplayCount)

	// Time filters and Get.
	var listed []deadletter.Letter
	err = deadletter.List(ctx, b.opts, b.dlq, deadletter.Filter{Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Hour), ErrorContains: "validation"},
		func(l deadletter.Letter) error { listed = append(listed, l); return nil })
	require.NoError(t, err)
	require.Len(t, listed, 3)
	err = deadletter.List(ctx, b.opts, b.dlq, deadletter.Filter{Until: time.Now().Add(-time.Hour)},
		func(deadletter.Letter) error { return errors.New("nothing is that old") })
	require.NoError(t, err)

	got, err := deadletter.Get(ctx, b.opts, b.dlq, listed[0].Position())
	require.NoError(t, err)
	require.Equal(t, listed[0].EventID, got.EventID)
	require.Equal(t, "sink", got.DeadLetter.Stage)
	require.Len(t, got.DeadLetter.History, 1)
	_, err = deadletter.Get(ctx, b.opts, b.dlq, deadletter.Position{Partition: 0, Offset: 999})
	require.ErrorIs(t, err, deadletter.ErrNotFound)
}

func TestParsePosition(t *testing.T) {
	t.Parallel()
	p, err := deadletter.ParsePosition("1:42")
	require.NoError(t, err)
	require.Equal(t, deadletter.Position{Partition: 1, Offset: 42}, p)
	for _, bad := range []string{"", "1", "a:1", "1:-2"} {
		_, err := deadletter.ParsePosition(bad)
		require.Error(t, err, bad)
	}
}
