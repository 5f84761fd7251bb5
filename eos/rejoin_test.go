package eos

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// envKfakeJoinBug=1 runs TestMemberKilledWhileJoiningExpires on kfake, where
// it fails (see the test), instead of on Apache Kafka.
const envKfakeJoinBug = "OUTBOX_TEST_KFAKE_JOIN_BUG"

// describeGroup describes group on its coordinator.
func describeGroup(t *testing.T, adm *kadm.Client, group string) kadm.DescribedGroup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := adm.DescribeGroups(ctx, group)
	require.NoError(t, err)
	g := d[group]
	require.NoError(t, g.Err)
	return g
}

func groupSummary(g kadm.DescribedGroup) string {
	s := fmt.Sprintf("state %s, %d members:", g.State, len(g.Members))
	for _, m := range g.Members {
		var parts []string
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, tp := range c.Topics {
				parts = append(parts, fmt.Sprintf("%s%v", tp.Topic, tp.Partitions))
			}
		}
		s += fmt.Sprintf(" [%s from %s, assigned %v]", m.MemberID, m.ClientHost, parts)
	}
	return s
}

// TestMemberKilledWhileJoiningExpires SIGKILLs a stage process while its
// JoinGroup is parked: it joined a stable group, which now waits for the
// other member (the leader) to rejoin at its next heartbeat. The leader then
// rejoins, the join completes with the dead member in it, and the leader
// gives it partitions. The dead member never heartbeats, so the coordinator
// must expire it one session timeout later and the group must hand its
// partitions back to the live process, which commits every input exactly
// once. (This is how the demo's transform stalled under chaos: a restarted
// transform killed again while waiting to join behind its predecessor.)
//
// Apache Kafka schedules every member's session expiry when a join completes
// (GroupMetadataManager.completeClassicGroupJoin), whether or not the
// response reached the client. kfake (through at least
// v0.0.0-20260918054303) does not: group.reply starts the session timer only
// when the JoinGroup response was written, and completeLeaderSync cancels the
// pending-sync timeout, so the dead member keeps its partitions forever and
// this test fails on kfake. So it starts its own Apache Kafka broker, as
// TestZombieStageFrozenWhileGroupRebalances does; OUTBOX_TEST_KFAKE_JOIN_BUG=1
// runs it on kfake instead, to show the bug.
func TestMemberKilledWhileJoiningExpires(t *testing.T) {
	var k *kafkatest.Kafka
	if os.Getenv(envKfakeJoinBug) == "1" {
		t.Setenv(kafkatest.EnvKafka, "kfake")
		k = kafkatest.New(t)
	} else {
		_, k = apacheKafka(t, 1)
	}
	const records, perTxn = 600, 50
	sessionTimeout := 6 * time.Second
	in := k.Topic("eos-jin", 3, nil)
	out := k.Topic("eos-jout", 3, nil)
	dlq := k.Topic("eos-jdlq", 1, nil)
	group := "eos-join-" + in
	produceInput(t, k, in, 0, records/2, 31, 40)

	ps := &procs{t: t, cfg: childConfig{
		Brokers: k.Brokers, Group: group, Input: in, Output: out, DLQ: dlq,
		MaxPerTxn: perTxn, SessionTimeout: sessionTimeout,
	}}
	t.Cleanup(ps.killAll)
	ps.start(0)
	waitCommitted(t, k, group, in, records/2, time.Minute)
	adm := k.Admin()

	// Start process 1 and kill it while its join is parked (the group is
	// preparing a rebalance with both members in it). Process 0 learns of
	// the rebalance at its next heartbeat (3s), so the window is wide; retry
	// when the kill came too late.
	parked := false
	for attempt := 0; attempt < 5 && !parked; attempt++ {
		ps.start(1)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			g := describeGroup(t, adm, group)
			if len(g.Members) == 2 && g.State == "PreparingRebalance" {
				ps.kill(1)
				g = describeGroup(t, adm, group)
				parked = len(g.Members) == 2 && g.State == "PreparingRebalance"
				t.Logf("attempt %d: killed process 1 while %s (parked: %v)", attempt, groupSummary(g), parked)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if !parked {
			ps.kill(1)
			// Let the group settle back to process 0 alone before trying again.
			settle := time.Now().Add(3 * sessionTimeout)
			for time.Now().Before(settle) {
				if g := describeGroup(t, adm, group); len(g.Members) == 1 && g.State == "Stable" {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	require.True(t, parked, "could not kill process 1 while its join was parked")
	killedAt := time.Now()

	// Wait for the join to complete (process 0 rejoins at its next
	// heartbeat) before producing more, so that process 0 is idle and its
	// session carries on through the rebalance: the dead member's fate is
	// then up to the coordinator alone.
	for deadline := killedAt.Add(6*time.Second + 2*sessionTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if g := describeGroup(t, adm, group); g.State == "Stable" {
			t.Logf("%v after the kill: %s", time.Since(killedAt).Round(time.Millisecond), groupSummary(g))
			break
		}
	}
	produceInput(t, k, in, records/2, records/2, 31, 40)
	// Process 0 rejoins within a heartbeat (3s, and it has already), the
	// dead member expires one session timeout after that join completed,
	// and the rebalance that follows gives its partitions back; allow a
	// heartbeat and a rejoin more (6s) for the rest of the input.
	limit := 6*time.Second + 2*sessionTimeout
	deadline := killedAt.Add(limit)
	var got int64
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := committedTotal(ctx, adm, group, in)
		cancel()
		if err == nil {
			got = n
		}
		if got >= records {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got < records {
		t.Fatalf("%v after the kill, the group committed %d of %d inputs; group now: %s",
			time.Since(killedAt).Round(time.Millisecond), got, records, groupSummary(describeGroup(t, adm, group)))
	}
	t.Logf("all %d inputs committed %v after the kill; group now: %s", records,
		time.Since(killedAt).Round(time.Millisecond), groupSummary(describeGroup(t, adm, group)))
	ps.stop(0)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	after, err := k.ReadCommitted(ctx, out)
	require.NoError(t, err)
	verifyMapped(t, after, records, "out:rec-")
}
