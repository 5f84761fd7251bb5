package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/relay"
)

// counter reads a counter of the relay's registry; label, when not empty,
// picks the series whose label besides the slot has that value.
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() != "slot" && l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestAdaptiveBatching: a backlog of single-event transactions goes to Kafka
// in batches as large as MaxBatchEvents allows; a stream of them a few
// milliseconds apart in far fewer Kafka transactions than Postgres
// committed; transactions far apart each get their own, committed at once.
// All end exactly once. Batches only grow on a slower machine, and the
// sparse case leaves 300ms between transactions, so no bound depends on the
// machine's speed.
func TestAdaptiveBatching(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg := prometheus.NewRegistry()
	cfg := b.config(t)
	cfg.Registerer = reg
	cfg.MaxLatency = 100 * time.Millisecond
	cfg.HeartbeatInterval = time.Hour
	// Commits as slow as a loaded broker's: what arrives meanwhile must
	// queue and go into the next batch.
	relay.SetAfterKafkaCommit(&cfg, func() { time.Sleep(20 * time.Millisecond) })

	// A backlog: the stream must queue whole transactions faster than the
	// commits go, or each batch holds no more than the queue between stream
	// and batching loop (the bug a queue of 8 transactions had).
	// setup made the slot, so the backlog is the slot's.
	const backlog = 2000
	w := startWriter(t, b.url, 5, 1, 0, backlog)
	<-w.done
	stop := runRelay(t, cfg)
	b.waitRelayed(t, backlog, time.Minute)
	kafkaTxns := counter(t, reg, "outbox_relay_kafka_transactions_total", "committed")
	t.Logf("backlog: %d Postgres transactions in %v Kafka transactions (MaxBatchEvents %d)", backlog, kafkaTxns, cfg.MaxBatchEvents)
	require.Less(t, kafkaTxns, float64(backlog/50), "a backlog of single-event transactions should fill batches of hundreds")

	const busy = 300
	before := kafkaTxns
	w = startWriter(t, b.url, 5, 1, 2*time.Millisecond, busy)
	<-w.done
	b.waitRelayed(t, backlog+busy, time.Minute)
	pgTxns := counter(t, reg, "outbox_relay_transactions_total", "") - backlog
	kafkaTxns = counter(t, reg, "outbox_relay_kafka_transactions_total", "committed") - before
	t.Logf("busy: %v Postgres transactions in %v Kafka transactions", pgTxns, kafkaTxns)
	require.EqualValues(t, busy, pgTxns)
	require.Less(t, kafkaTxns, pgTxns/4, "a transaction every 2ms with a 100ms budget should fold several into each Kafka transaction")

	// Sparse: each transaction alone, and without waiting for the budget.
	const sparse = 5
	before = counter(t, reg, "outbox_relay_kafka_transactions_total", "committed")
	w = startWriter(t, b.url, 5, 1, 300*time.Millisecond, sparse)
	<-w.done
	b.waitRelayed(t, backlog+busy+sparse, time.Minute)
	kafkaTxns = counter(t, reg, "outbox_relay_kafka_transactions_total", "committed")
	t.Logf("sparse: %d Postgres transactions in %v Kafka transactions", sparse, kafkaTxns-before)
	require.GreaterOrEqual(t, kafkaTxns-before, float64(sparse), "transactions 300ms apart against a 100ms budget: one Kafka transaction each")

	b.verifyExactlyOnce(t, time.Minute)
	require.ErrorIs(t, stop(), context.Canceled)
}
