package ingest

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a delivery, the outcome label of outbox_ingest_webhooks_total.
const (
	outcomeAccepted      = "accepted"       // written; a record when mapped
	outcomeStale         = "stale"          // written raw only: not newer than the known version
	outcomeDuplicate     = "duplicate"      // a redelivery: the stored answer replayed, nothing written
	outcomeBadSignature  = "bad_signature"  // 401, nothing written
	outcomeInvalid       = "invalid"        // 400, 405, 413, 422: nothing written, fix the sender or the mapping
	outcomeInFlight      = "in_flight"      // 409: the same delivery is being written now
	outcomeError         = "error"          // 5xx: Postgres failed; the provider retries
	outcomeUnknownSource = "unknown_source" // 404
)

// metrics are the handler's Prometheus series.
type metrics struct {
	webhooks *prometheus.CounterVec   // source, outcome
	seconds  *prometheus.HistogramVec // source
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_ingest_webhooks_total",
			Help: "Webhook deliveries by source and outcome (accepted, stale, duplicate, bad_signature, invalid, in_flight, error, unknown_source).",
		}, []string{"source", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "outbox_ingest_duration_seconds", Help: "Time from a delivery's arrival to its answer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"source"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.webhooks, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ingest: register metrics: %w", err)
		}
	}
	return m, nil
}
