package sink

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sink's Prometheus series.
type metrics struct {
	calls        *prometheus.CounterVec   // endpoint, outcome
	callSeconds  *prometheus.HistogramVec // endpoint
	ledgerSecs   *prometheus.HistogramVec // op: claim, record
	retries      *prometheus.CounterVec   // endpoint
	deadLetters  *prometheus.CounterVec   // endpoint, class
	skipped      *prometheus.CounterVec   // endpoint, reason
	unknown      *prometheus.CounterVec   // endpoint, resolution
	breakerState *prometheus.GaugeVec     // endpoint
	ledgerRows   *prometheus.GaugeVec     // endpoint, status
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_sink_calls_total", Help: "External calls made, by endpoint and outcome (succeeded, retriable, permanent).",
		}, []string{"endpoint", "outcome"}),
		callSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "outbox_sink_call_duration_seconds", Help: "Latency of external calls.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"endpoint"}),
		ledgerSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "outbox_sink_ledger_duration_seconds", Help: "Ledger transactions around each call (claim before, record after).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"op"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_sink_retries_total", Help: "Retries scheduled after a failed call.",
		}, []string{"endpoint"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_sink_dead_letters_total", Help: "Records written to the dead-letter topic, by error class.",
		}, []string{"endpoint", "class"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_sink_skipped_total", Help: "Deliveries that made no call because the ledger had them (redeliveries, stale retry copies).",
		}, []string{"endpoint", "reason"}),
		unknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_sink_unknown_total", Help: "Calls found in flight after a crash, by how they were resolved.",
		}, []string{"endpoint", "resolution"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outbox_sink_breaker_state", Help: "Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.",
		}, []string{"endpoint"}),
		ledgerRows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outbox_sink_ledger_rows", Help: "Ledger rows per endpoint and status updated within the status window (24h by default).",
		}, []string{"endpoint", "status"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.calls, m.callSeconds, m.ledgerSecs, m.retries, m.deadLetters, m.skipped, m.unknown, m.breakerState, m.ledgerRows} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}
