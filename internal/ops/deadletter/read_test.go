package deadletter_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/outboxrelay/outbox/internal/ops/deadletter"
)

// TestMissingTopic: `outbox dlq list|show|replay` on a topic that does not
// exist get ErrTopicNotFound naming it, not the broker's raw
// UNKNOWN_TOPIC_OR_PARTITION.
func TestMissingTopic(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	topic := fmt.Sprintf("no-such-dlq-%08x", rand.Uint32())
	want := "deadletter: topic " + topic + " does not exist"

	err := deadletter.List(ctx, b.opts, topic, deadletter.Filter{}, func(deadletter.Letter) error {
		t.Fatal("no letter expected")
		return nil
	})
	require.ErrorIs(t, err, deadletter.ErrTopicNotFound)
	require.ErrorIs(t, err, kerr.UnknownTopicOrPartition, "callers that matched the Kafka error still do")
	require.EqualError(t, err, want)

	_, err = deadletter.Get(ctx, b.opts, topic, deadletter.Position{})
	require.ErrorIs(t, err, deadletter.ErrTopicNotFound)
	require.EqualError(t, err, want)

	for _, dry := range []bool{true, false} {
		_, err = deadletter.Replay(ctx, b.opts, deadletter.ReplayConfig{Topic: topic, DryRun: dry})
		require.ErrorIs(t, err, deadletter.ErrTopicNotFound, "dry run %v", dry)
		require.EqualError(t, err, want)
	}
}

// TestMissingLedgerIsNotMissingTopic: a missing replay ledger is its own
// error, so the command does not blame the dead-letter topic.
func TestMissingLedgerIsNotMissingTopic(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.deadLetters(ctx, t, 1, 0)
	_, err := deadletter.Replay(ctx, b.opts, deadletter.ReplayConfig{Topic: b.dlq, LedgerTopic: b.dlq + ".no-ledger"})
	require.ErrorIs(t, err, kerr.UnknownTopicOrPartition)
	require.NotErrorIs(t, err, deadletter.ErrTopicNotFound)
	require.EqualError(t, err, "deadletter: replay ledger topic "+b.dlq+".no-ledger does not exist: create it (kind replay_ledger in topics.yaml, then outbox topics apply)",
		"the message names the ledger, not the broker's UNKNOWN_TOPIC_OR_PARTITION")
}

// TestEmptyTopic: an existing topic without dead letters is an empty list.
func TestEmptyTopic(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	n := 0
	require.NoError(t, deadletter.List(ctx, b.opts, b.dlq, deadletter.Filter{}, func(deadletter.Letter) error {
		n++
		return nil
	}))
	require.Zero(t, n)
	_, err := deadletter.Get(ctx, b.opts, b.dlq, deadletter.Position{})
	require.ErrorIs(t, err, deadletter.ErrNotFound)
	require.NotErrorIs(t, err, deadletter.ErrTopicNotFound)
}
