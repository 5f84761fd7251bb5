package lagcheck_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outboxrelay/outbox/internal/ops/lagcheck"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

type testBundle struct {
	k     *kafkatest.Kafka
	topic string
	group string
	check *lagcheck.Checker
}

func setup(t *testing.T) (*testBundle, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	k := kafkatest.New(t)
	b := &testBundle{k: k, topic: k.Topic("lag", 1, nil), group: fmt.Sprintf("lag-group-%08x", rand.Uint32())}
	c, err := lagcheck.New(lagcheck.Config{Groups: []string{b.group}, Window: 3, ProbeTimeout: time.Second}, k.Opts()...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	b.check = c
	return b, ctx
}

// produce writes n records stamped age ago, plainly or in one transaction
// that is committed, aborted or left open (txn "commit", "abort", "open").
func (b *testBundle) produce(ctx context.Context, t *testing.T, n int, age time.Duration, txn string) *kgo.Client {
	t.Helper()
	opts := append(b.k.Opts(), kgo.DefaultProduceTopic(b.topic))
	if txn != "" {
		opts = append(opts, kgo.TransactionalID(fmt.Sprintf("lagtest-%08x", rand.Uint32())))
	}
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	if txn != "" {
		require.NoError(t, cl.BeginTransaction())
	}
	for i := range n {
		r := &kgo.Record{Value: []byte(fmt.Sprint(i)), Timestamp: time.Now().Add(-age)}
		require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
	}
	switch txn {
	case "commit":
		require.NoError(t, cl.EndTransaction(ctx, kgo.TryCommit))
	case "abort":
		require.NoError(t, cl.EndTransaction(ctx, kgo.TryAbort))
	}
	if txn == "commit" || txn == "abort" {
		b.waitMarker(ctx, t)
	}
	return cl
}

// waitMarker waits until the partition's last stable offset has reached its
// high watermark. A real broker answers EndTxn once the decision is in the
// transaction log and writes the markers after it, so until then the last
// stable offset still sits before the transaction.
func (b *testBundle) waitMarker(ctx context.Context, t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		stable, err := b.k.Admin().ListCommittedOffsets(ctx, b.topic)
		if err != nil {
			return false
		}
		end, err := b.k.Admin().ListEndOffsets(ctx, b.topic)
		if err != nil {
			return false
		}
		s, ok1 := stable.Lookup(b.topic, 0)
		e, ok2 := end.Lookup(b.topic, 0)
		return ok1 && ok2 && s.Err == nil && e.Err == nil && s.Offset == e.Offset
	}, 20*time.Second, 20*time.Millisecond, "the transaction's marker never became stable")
}

// commit sets the group's offset from outside the group (it must be empty).
func (b *testBundle) commit(ctx context.Context, t *testing.T, offset int64) {
	t.Helper()
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: b.topic, Partition: 0, At: offset})
	resp, err := b.k.Admin().CommitOffsets(ctx, b.group, os)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
}

// member joins the group with a consumer that never commits by itself, and
// waits until the coordinator lists it.
func (b *testBundle) member(ctx context.Context, t *testing.T) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(b.k.Opts(), kgo.ConsumerGroup(b.group), kgo.ConsumeTopics(b.topic), kgo.DisableAutoCommit())...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	require.Eventually(t, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		cl.PollFetches(pctx)
		cancel()
		gs, err := b.k.Admin().DescribeGroups(ctx, b.group)
		return err == nil && len(gs[b.group].Members) == 1 && gs[b.group].State == "Stable"
	}, 20*time.Second, 50*time.Millisecond)
	return cl
}

func memberCommit(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, offset int64) {
	t.Helper()
	var cerr error
	cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{topic: {0: {Epoch: -1, Offset: offset}}},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			cerr = err
			if err == nil {
				for _, tp := range resp.Topics {
					for _, p := range tp.Partitions {
						if p.ErrorCode != 0 {
							cerr = fmt.Errorf("commit error code %d", p.ErrorCode)
						}
					}
				}
			}
		})
	require.NoError(t, cerr)
}

func (b *testBundle) sample(ctx context.Context, t *testing.T) lagcheck.GroupReport {
	t.Helper()
	rep, err := b.check.Sample(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Groups, 1)
	require.Len(t, rep.Groups[0].Partitions, 1)
	return rep.Groups[0]
}

func TestLagStopped(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.produce(ctx, t, 10, time.Minute, "")
	b.commit(ctx, t, 4)

	g := b.sample(ctx, t)
	p := g.Partitions[0]
	require.Equal(t, int64(6), p.Lag)
	require.InDelta(t, 60, p.LagSeconds, 10)
	require.Equal(t, lagcheck.StatusStop, p.Status)
	require.Equal(t, lagcheck.StatusErr, g.Status)
	require.Equal(t, lagcheck.StatusStop, g.Worst)
	require.Zero(t, g.Members)

	reg := prometheus.NewRegistry()
	m, err := lagcheck.NewMetrics(reg)
	require.NoError(t, err)
	m.Observe(lagcheck.Report{Groups: []lagcheck.GroupReport{g}})
	want := fmt.Sprintf("# HELP outbox_consumer_lag_records Records between the group's committed offset and the partition's last stable offset.\n"+
		"# TYPE outbox_consumer_lag_records gauge\noutbox_consumer_lag_records{group=%q,partition=\"0\",topic=%q} 6\n", b.group, b.topic)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want), "outbox_consumer_lag_records"))
}

func TestLagStalled(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.produce(ctx, t, 10, 0, "")
	cl := b.member(ctx, t)
	memberCommit(ctx, t, cl, b.topic, 4)

	g := b.sample(ctx, t)
	require.Equal(t, lagcheck.StatusOK, g.Status, "one sample cannot tell a stall")
	b.produce(ctx, t, 2, 0, "")
	g = b.sample(ctx, t)
	require.Equal(t, int64(8), g.Partitions[0].Lag)
	require.Equal(t, lagcheck.StatusStall, g.Partitions[0].Status)
	require.Equal(t, lagcheck.StatusErr, g.Status)
	require.Equal(t, 1, g.Members)
}

func TestLagRewinding(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.produce(ctx, t, 10, 0, "")
	cl := b.member(ctx, t)
	memberCommit(ctx, t, cl, b.topic, 8)
	require.Equal(t, lagcheck.StatusOK, b.sample(ctx, t).Status)
	memberCommit(ctx, t, cl, b.topic, 3)
	g := b.sample(ctx, t)
	require.Equal(t, lagcheck.StatusRewind, g.Partitions[0].Status)
	require.Equal(t, lagcheck.StatusErr, g.Status)
}

func TestLagIdleTransactionalPartition(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.produce(ctx, t, 5, 0, "commit") // offsets 0-4, commit marker at 5
	b.commit(ctx, t, 5)               // a consumer commits past its last record, not past the marker

	for range 2 {
		p := b.sample(ctx, t).Partitions[0]
		require.Equal(t, int64(6), p.End, "last stable offset is past the marker")
		require.Equal(t, int64(5), p.Committed)
		require.Zero(t, p.Lag, "the commit marker is not lag")
		require.Zero(t, p.LagSeconds)
		require.Equal(t, lagcheck.StatusOK, p.Status)
	}

	// An aborted transaction after it is not lag either.
	b.produce(ctx, t, 3, 0, "abort")
	p := b.sample(ctx, t).Partitions[0]
	require.Zero(t, p.Lag)
	require.Equal(t, lagcheck.StatusOK, p.Status)
}

func TestLagOpenTransaction(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.produce(ctx, t, 5, 0, "commit") // 0-4, marker 5
	b.commit(ctx, t, 6)
	open := b.produce(ctx, t, 3, time.Hour, "open") // 6-8, not committed
	p := b.sample(ctx, t).Partitions[0]
	require.Equal(t, int64(9), p.HighWatermark)
	require.Equal(t, int64(6), p.End, "last stable offset stops at the open transaction")
	require.Zero(t, p.Lag, "an open transaction's records are not lag")
	require.Equal(t, lagcheck.StatusOK, p.Status)

	// Committed, they are.
	require.NoError(t, open.EndTransaction(ctx, kgo.TryCommit))
	// A real broker answers EndTxn once the coordinator decided; the commit
	// marker, which moves the last stable offset, is written just after.
	require.Eventually(t, func() bool {
		p = b.sample(ctx, t).Partitions[0]
		return p.End == 10
	}, 10*time.Second, 20*time.Millisecond, "the last stable offset passes the committed transaction")
	require.Equal(t, int64(4), p.Lag)
	require.InDelta(t, 3600, p.LagSeconds, 60)
	require.Equal(t, lagcheck.StatusOK, p.Status, "lag was zero within the window")
}

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }

// TestLagNoGroups: `outbox lag` before any stage committed, or with a
// wrong --group, gets an empty report that says which named groups are
// unknown, not a report of groups that do not exist.
func TestLagNoGroups(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.produce(ctx, t, 3, 0, "")

	// A named group that never committed and has no member.
	rep, err := b.check.Sample(ctx)
	require.NoError(t, err)
	require.Empty(t, rep.Groups)
	require.Equal(t, []string{b.group}, rep.Missing)

	// Two names, one of them real: only the other is missing.
	other := b.group + "-typo"
	c, err := lagcheck.New(lagcheck.Config{Groups: []string{other, b.group, other}, Window: 1, ProbeTimeout: time.Second}, b.k.Opts()...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	b.commit(ctx, t, 1)
	rep, err = c.Sample(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Groups, 1)
	require.Equal(t, b.group, rep.Groups[0].Group)
	require.Equal(t, int64(2), rep.Groups[0].Lag)
	require.Equal(t, []string{other}, rep.Missing)

	// A group with a member that has not committed yet is known.
	b.group = other // member joins b.group
	b.member(ctx, t)
	rep, err = c.Sample(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Groups, 2)
	require.Empty(t, rep.Missing)
	require.Equal(t, other, rep.Groups[1].Group)
	require.Equal(t, 1, rep.Groups[1].Members)
	require.Empty(t, rep.Groups[1].Partitions)
}

// TestLagNoGroupsOnCluster: with no group filter on a cluster without
// groups, the report is empty and nothing is missing. (The shared Apache
// broker has the other tests' groups: there, only nothing is missing.)
func TestLagNoGroupsOnCluster(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	c, err := lagcheck.New(lagcheck.Config{}, k.Opts()...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	rep, err := c.Sample(ctx)
	require.NoError(t, err)
	if !k.Real() {
		require.Empty(t, rep.Groups)
	}
	require.Empty(t, rep.Missing, "without a filter no group is missing")
	require.False(t, rep.At.IsZero())
}
