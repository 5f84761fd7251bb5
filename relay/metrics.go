package relay

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's Prometheus collectors, labelled with the slot.
type metrics struct {
	events         prometheus.Counter
	transactions   prometheus.Counter
	kafkaTxns      *prometheus.CounterVec
	batchEvents    prometheus.Histogram
	commitSeconds  prometheus.Histogram
	lagSeconds     prometheus.Histogram
	lagBytes       prometheus.Gauge
	retainedBytes  prometheus.Gauge
	confirmedLSN   prometheus.Gauge
	active         prometheus.Gauge
	sessionsFailed prometheus.Counter
	slotsRebuilt   prometheus.Counter
	repairedEvents prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, slot string) (*metrics, error) {
	cl := prometheus.Labels{"slot": slot}
	m := &metrics{
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_relay_events_total",
			Help: "Outbox rows relayed to Kafka (committed).", ConstLabels: cl}),
		transactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_relay_transactions_total",
			Help: "Postgres transactions relayed to Kafka (committed).", ConstLabels: cl}),
		kafkaTxns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_relay_kafka_transactions_total",
			Help: "Kafka transactions ended, by result (committed, failed).", ConstLabels: cl}, []string{"result"}),
		batchEvents: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outbox_relay_batch_events",
			Help: "Events per Kafka transaction.", ConstLabels: cl, Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outbox_relay_kafka_commit_seconds",
			Help: "Time to flush and commit a Kafka transaction.", ConstLabels: cl, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		lagSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outbox_relay_lag_seconds",
			Help: "Postgres commit time to Kafka commit, per relayed transaction.", ConstLabels: cl, Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}),
		lagBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_relay_lag_bytes",
			Help: "Server WAL end minus the LSN confirmed to Postgres.", ConstLabels: cl}),
		retainedBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_relay_slot_retained_wal_bytes",
			Help: "WAL the slot keeps from being recycled (current LSN minus restart_lsn).", ConstLabels: cl}),
		confirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_relay_confirmed_lsn",
			Help: "The LSN last confirmed to Postgres, as a number.", ConstLabels: cl}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_relay_active",
			Help: "1 while this relay holds the slot and streams, 0 while it waits as a standby or restarts.", ConstLabels: cl}),
		sessionsFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_relay_session_restarts_total",
			Help: "Sessions that ended in an error and were restarted from the slot.", ConstLabels: cl}),
		slotsRebuilt: prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_relay_slot_rebuilds_total",
			Help: "Times the relay recreated its slot to repair a gap (--on-slot-loss=republish, --since).", ConstLabels: cl}),
		repairedEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_relay_repaired_records_total",
			Help: "Records the relay republished from the events table to repair a gap.", ConstLabels: cl}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.events, m.transactions, m.kafkaTxns, m.batchEvents, m.commitSeconds,
		m.lagSeconds, m.lagBytes, m.retainedBytes, m.confirmedLSN, m.active, m.sessionsFailed, m.slotsRebuilt, m.repairedEvents} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("%w: metrics for slot %q are already registered: %v", errConfig, slot, err)
			}
			return nil, fmt.Errorf("relay: register metrics: %w", err)
		}
	}
	return m, nil
}
