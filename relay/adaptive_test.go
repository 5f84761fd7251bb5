package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
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

// TestAdaptiveBatching: a stream of single-event transactions a few
// milliseconds apart goes to Kafka in far fewer transactions than Postgres
// committed, while transactions far apart each get their own, committed at
// once; both end exactly once. Batches only grow on a slower machine, and the
// sparse case leaves 300ms between transactions, so neither bound depends on
// the machine's speed.
func TestAdaptiveBatching(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg := prometheus.NewRegistry()
	cfg := b.config(t)
	cfg.Registerer = reg
	cfg.MaxLatency = 100 * time.Millisecond
	cfg.HeartbeatInterval = time.Hour
	stop := runRelay(t, cfg)
	b.waitActive(t, 0)

	const busy = 300
	w := startWriter(t, b.url, 5, 1, 2*time.Millisecond, busy)
	<-w.done
	b.waitRelayed(t, busy, time.Minute)
	pgTxns := counter(t, reg, "outbox_relay_transactions_total", "")
	kafkaTxns := counter(t, reg, "outbox_relay_kafka_transactions_total", "committed")
	t.Logf("busy: %v Postgres transactions in %v Kafka transactions", pgTxns, kafkaTxns)
	require.EqualValues(t, busy, pgTxns)
	require.Less(t, kafkaTxns, pgTxns/4, "a transaction every 2ms with a 100ms budget should fold several into each Kafka transaction")

	// Sparse: each transaction alone, and without waiting for the budget.
	const sparse = 5
	before := kafkaTxns
	w = startWriter(t, b.url, 5, 1, 300*time.Millisecond, sparse)
	<-w.done
	b.waitRelayed(t, busy+sparse, time.Minute)
	kafkaTxns = counter(t, reg, "outbox_relay_kafka_transactions_total", "committed")
	t.Logf("sparse: %d Postgres transactions in %v Kafka transactions", sparse, kafkaTxns-before)
	require.GreaterOrEqual(t, kafkaTxns-before, float64(sparse), "transactions 300ms apart against a 100ms budget: one Kafka transaction each")

	b.verifyExactlyOnce(t, time.Minute)
	require.ErrorIs(t, stop(), context.Canceled)
}
