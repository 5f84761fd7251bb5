package eos

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// signal sends sig to process i.
func (p *procs) signal(i int, sig syscall.Signal) error {
	p.mu.Lock()
	cmd := p.cmds[i]
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("process %d is not running", i)
	}
	return cmd.Process.Signal(sig)
}

// alive reports whether process i can still take a signal: it has not been
// reaped by kill or stop (an exited child that is not yet reaped counts too,
// so callers check its log as well).
func (p *procs) alive(i int) bool {
	return p.signal(i, 0) == nil
}

// describeTxn describes one transactional id on its coordinator.
func describeTxn(t *testing.T, adm *kadm.Client, id string) kadm.DescribedTransaction {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := adm.DescribeTransactions(ctx, id)
	require.NoError(t, err)
	require.NoError(t, d[id].Err)
	return d[id]
}

// committedOffsets are the group's committed offsets on topic per partition.
func committedOffsets(t *testing.T, adm *kadm.Client, group, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, group)
	require.NoError(t, err)
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil {
			out[o.Partition] = o.At
		}
	})
	return out
}

// epochInLog reports whether topic's log, aborted and open transactions
// included, holds a record of producer id pid at epoch.
func epochInLog(t *testing.T, k *kafkatest.Kafka, topic string, pid int64, epoch int16) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := k.ReadUncommitted(ctx, topic)
	require.NoError(t, err)
	for _, r := range recs {
		if r.ProducerID == pid && r.ProducerEpoch == epoch {
			return true
		}
	}
	return false
}

// TestZombieStageFrozenWhileGroupRebalances freezes one of two stage
// processes with SIGSTOP in the middle of a transaction, on a real Apache
// Kafka coordinator. The transaction times out (5s) and the coordinator
// aborts it, bumping the epoch; the member's session times out (6s) and the
// group gives its partitions to the other process, which resumes them from
// the committed offsets. Then the zombie gets SIGCONT and carries on with its
// stale transaction: the brokers must refuse it (nothing of that
// transaction's producer epoch is visible to read_committed, its records in
// the log are aborted), the zombie must notice by itself (its produce fails
// with INVALID_PRODUCER_EPOCH and it aborts), rejoin the group and then
// commit its share of more input under a new epoch, and the output must hold
// every input exactly once in per-key order, for a read_committed watcher
// running throughout and for a final read.
func TestZombieStageFrozenWhileGroupRebalances(t *testing.T) {
	a, k := apacheKafka(t, 1)
	const records, extra, perTxn = 6_000, 2_000, 750
	in := k.Topic("eos-zin", 4, nil)
	out := k.Topic("eos-zout", 3, nil)
	dlq := k.Topic("eos-zdlq", 1, nil)
	group := "eos-zombie-" + in
	produceInput(t, k, in, 0, records, 97, 40)
	during := startWatcher(t, k, out)
	ps := &procs{t: t, cfg: childConfig{
		Brokers: k.Brokers, Group: group, Input: in, Output: out, DLQ: dlq,
		// 750 records at 3ms: a transaction is open about 2.25s of every
		// 2.3s, so a SIGSTOP lands inside one.
		MaxPerTxn: perTxn, RecordDelay: 3 * time.Millisecond, SessionTimeout: 6 * time.Second,
	}}
	t.Cleanup(ps.killAll)
	ps.start(0)
	ps.start(1)
	zombieID := group + "-proc-0"
	waitCommitted(t, k, group, in, records/5, 3*time.Minute)

	var open kadm.DescribedTransaction
	for try := 0; ; try++ {
		require.Less(t, try, 50, "never caught process 0 inside an open transaction")
		require.NoError(t, ps.signal(0, syscall.SIGSTOP))
		open = describeTxn(t, k.Admin(), zombieID)
		// franz-go adds a partition to the transaction before it sends the
		// records, so a freeze between the two shows an Ongoing transaction
		// with partitions and nothing in the log (CI saw it once): only a
		// transaction with records written counts as caught mid-way.
		if open.State == "Ongoing" && len(open.Topics) > 0 && epochInLog(t, k, out, open.ProducerID, open.ProducerEpoch) {
			break
		}
		require.NoError(t, ps.signal(0, syscall.SIGCONT))
		time.Sleep(time.Duration(50+try*37%300) * time.Millisecond)
	}
	frozenAt := time.Now()
	frozenOffsets := committedOffsets(t, k.Admin(), group, in)
	t.Logf("froze process 0 inside transaction producer id %d epoch %d (timeout %dms), partitions %v; committed input offsets %v",
		open.ProducerID, open.ProducerEpoch, open.TimeoutMillis, open.Topics, frozenOffsets)

	// The coordinator aborts the frozen transaction on its timeout, with a
	// new epoch; the group evicts the member after its session timeout.
	require.Eventually(t, func() bool {
		d := describeTxn(t, k.Admin(), zombieID)
		return d.State != "Ongoing" && d.ProducerEpoch > open.ProducerEpoch
	}, time.Minute, 100*time.Millisecond, "the coordinator never aborted the frozen transaction")
	abortedAfter := time.Since(frozenAt)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g, err := k.Admin().DescribeGroups(ctx, group)
		return err == nil && g[group].State == "Stable" && len(g[group].Members) == 1
	}, time.Minute, 100*time.Millisecond, "the group never settled without the frozen member")
	rebalancedAfter := time.Since(frozenAt)
	// The other process takes every partition on: each one the zombie held
	// with records left advances past where the zombie left it.
	ectx, ecancel := context.WithTimeout(context.Background(), 5*time.Second)
	ends, err := k.Admin().ListEndOffsets(ectx, in)
	ecancel()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		now := committedOffsets(t, k.Admin(), group, in)
		for p, end := range ends[in] {
			if o := frozenOffsets[p]; now[p] <= o && o < end.Offset {
				return false
			}
		}
		return true
	}, 2*time.Minute, 200*time.Millisecond, "the surviving member did not take over every partition")
	tookOverAfter := time.Since(frozenAt)
	t.Logf("after the freeze: transaction aborted by the coordinator at %s, group settled without the zombie at %s, every partition moving again at %s",
		abortedAfter.Round(time.Millisecond), rebalancedAfter.Round(time.Millisecond), tookOverAfter.Round(time.Millisecond))

	logOff := len(ps.logs[0].String())
	require.NoError(t, ps.signal(0, syscall.SIGCONT))
	resumedAt := time.Now()
	// The zombie learns from the brokers that it was fenced: its produce
	// fails (INVALID_PRODUCER_EPOCH) and it aborts, or its session fails and
	// is rebuilt. Either way it must not commit; then it rejoins the group as
	// a new member.
	zombieLog := func() string { return ps.logs[0].String()[logOff:] }
	noticedBy := func(l string) bool {
		return strings.Contains(l, "eos: produce failed; aborting") || strings.Contains(l, "eos: session failed") || strings.Contains(l, "eos: flush failed; aborting")
	}
	require.Eventually(t, func() bool { return noticedBy(zombieLog()) },
		time.Minute, 50*time.Millisecond, "the resumed zombie did not notice it was fenced")
	noticed := time.Since(resumedAt)
	for _, l := range strings.Split(zombieLog(), "\n") {
		if noticedBy(l) {
			t.Logf("zombie, %s after SIGCONT: %s", noticed.Round(time.Millisecond), l)
			break
		}
	}
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g, err := k.Admin().DescribeGroups(ctx, group)
		return err == nil && g[group].State == "Stable" && len(g[group].Members) == 2
	}, time.Minute, 100*time.Millisecond, "the resumed zombie did not rejoin the group")
	rejoined := time.Since(resumedAt)
	require.True(t, ps.alive(0), "the zombie exited instead of rejoining")
	fatalLines := strings.Count(zombieLog(), "fatal InitProducerID error")

	// More input after the rejoin: the former zombie must do its share with
	// a fresh producer epoch, not sit on its partitions with a broken
	// producer (then these inputs would never be committed).
	rejoinedAt := time.Now()
	produceInput(t, k, in, records, extra, 97, 40)
	waitCommitted(t, k, group, in, records+extra, 3*time.Minute)
	ps.stop(0)
	ps.stop(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	after, err := k.ReadCommitted(ctx, out)
	require.NoError(t, err)
	verifyMapped(t, after, records+extra, "out:rec-")
	verifyMapped(t, during.wait(t, records+extra, 30*time.Second), records+extra, "out:rec-")

	// Broker truth, by producer id and epoch (KIP-890: one epoch per
	// transaction): nothing of the frozen transaction, or written by the
	// zombie after SIGCONT under its old epoch, is visible to read_committed.
	stale, late, healed := 0, 0, 0
	for _, r := range after {
		if r.ProducerID == open.ProducerID && r.ProducerEpoch > open.ProducerEpoch && !r.Timestamp.Before(rejoinedAt) {
			healed++
		}
		if r.ProducerID == open.ProducerID && r.ProducerEpoch <= open.ProducerEpoch {
			if r.ProducerEpoch == open.ProducerEpoch {
				stale++
			}
			if !r.Timestamp.Before(resumedAt) {
				late++
			}
		}
	}
	inLog := 0
	logged, err := k.ReadUncommitted(context.Background(), out)
	require.NoError(t, err)
	for _, r := range logged {
		if r.ProducerID == open.ProducerID && r.ProducerEpoch == open.ProducerEpoch {
			inLog++
		}
	}
	require.Zero(t, late, "records the zombie produced after SIGCONT under its old epoch are visible to read_committed")
	require.Positive(t, healed, "the former zombie committed nothing after rejoining the group")
	if a.TransactionVersion >= 2 {
		require.Zero(t, stale, "records of the frozen transaction are visible to read_committed")
		require.Positive(t, inLog, "the frozen transaction left no records in the log: the freeze did not catch it mid-transaction")
	}
	t.Logf("%d records exactly once; the frozen transaction (epoch %d) left %d aborted records in the log, 0 committed; "+
		"the zombie noticed %s after SIGCONT (franz-go logged %d \"fatal InitProducerID error\" lines), rejoined the group %s after SIGCONT "+
		"and then committed %d outputs under a new epoch",
		len(after), open.ProducerEpoch, inLog, noticed.Round(time.Millisecond), fatalLines, rejoined.Round(time.Millisecond), healed)
}
