package eos

import (
	"context"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// TestFencedProducerRecovers fences the stage's producer mid-stream with a
// second producer on the same transactional id: the stage must drop the
// session, initialise its producer again and finish with every input mapped
// exactly once.
func TestFencedProducerRecovers(t *testing.T) {
	t.Parallel()
	b := setupRecovery(t, 3_000)
	var fenced atomic.Bool
	b.cfg.Transform = func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
		if r.Offset == 500 && fenced.CompareAndSwap(false, true) {
			// A zombie-killer appears: same transactional id, new epoch.
			cl, err := kgo.NewClient(append(b.k.Opts(), kgo.TransactionalID(b.cfg.TransactionalID),
				kgo.DefaultProduceTopic(b.cfg.OutputTopic))...)
			if err != nil {
				return nil, err
			}
			defer cl.Close()
			if err := cl.BeginTransaction(); err != nil {
				return nil, err
			}
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("fencer")}).FirstErr(); err != nil {
				return nil, err
			}
			if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
				return nil, err
			}
		}
		return mark(ctx, r)
	}
	s := b.run(t)
	require.True(t, fenced.Load())
	require.GreaterOrEqual(t, testutil.ToFloat64(s.m.sessionRestart), 1.0, "the fenced session was rebuilt")
}

// TestTimedOutTransactionRecovers stalls one transaction past the broker's
// transaction timeout: the broker aborts it, the stage re-initialises and
// redoes the work exactly once.
func TestTimedOutTransactionRecovers(t *testing.T) {
	t.Parallel()
	b := setupRecovery(t, 3_000)
	b.cfg.TransactionTimeout = 1500 * time.Millisecond
	var stalled atomic.Bool
	b.cfg.Transform = func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
		if r.Offset == 510 && stalled.CompareAndSwap(false, true) {
			time.Sleep(3 * time.Second)
		}
		return mark(ctx, r)
	}
	s := b.run(t)
	require.True(t, stalled.Load())
	if !b.k.Real() {
		// kfake times transactions out at once; a real broker checks only every
		// transaction.abort.timed.out.transaction.cleanup.interval.ms (10s by
		// default) and may let this one commit, which is just as correct.
		require.GreaterOrEqual(t, testutil.ToFloat64(s.m.txnAborted), 1.0, "the timed-out transaction did not commit")
	}
}

type recoveryBundle struct {
	k   *kafkatest.Kafka
	cfg Config
	n   int
}

func setupRecovery(t *testing.T, n int) *recoveryBundle {
	k := kafkatest.New(t)
	in := k.Topic("rec-in", 1, nil)
	produceInput(t, k, in, 0, n, 13, 40)
	return &recoveryBundle{k: k, n: n, cfg: Config{
		KafkaOpts:          k.Opts(),
		Group:              "rec-" + in,
		InputTopics:        []string{in},
		OutputTopic:        k.Topic("rec-out", 2, nil),
		DeadLetterTopic:    k.Topic("rec-dlq", 1, nil),
		TransactionalID:    "rec-" + in,
		MaxRecordsPerTxn:   250,
		SessionTimeout:     6 * time.Second,
		TransactionTimeout: 5 * time.Second,
		RestartBackoff:     100 * time.Millisecond,
		Logger:             slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}}
}

// run runs the stage until every input committed and checks the output.
func (b *recoveryBundle) run(t *testing.T) *Stage {
	s, err := New(b.cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	require.Eventually(t, func() bool { return testutil.ToFloat64(s.m.recordsIn) >= float64(b.n) },
		time.Minute, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, s.Stop(ctx))
	require.Equal(t, float64(b.n), testutil.ToFloat64(s.m.recordsIn), "no input committed twice")
	out, err := b.k.ReadCommitted(ctx, b.cfg.OutputTopic)
	require.NoError(t, err)
	verifyMapped(t, out, b.n, "out:rec-")
	return s
}
