package eos

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// metrics are the stage's Prometheus series, all labelled with the stage name.
type metrics struct {
	recordsIn      prometheus.Counter
	recordsOut     prometheus.Counter
	deadLettered   prometheus.Counter
	txnCommitted   prometheus.Counter
	txnAborted     prometheus.Counter
	sessionRestart prometheus.Counter
	commitSeconds  prometheus.Histogram
	lag            *prometheus.GaugeVec
}

func newMetrics(stage string, reg prometheus.Registerer) (*metrics, error) {
	cl := prometheus.Labels{"stage": stage}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "outbox", Subsystem: "eos", Name: name, Help: help, ConstLabels: cl,
		})
	}
	m := &metrics{
		recordsIn:      counter("records_in_total", "Input records processed in committed transactions."),
		recordsOut:     counter("records_out_total", "Output records produced in committed transactions."),
		deadLettered:   counter("records_dead_lettered_total", "Input records sent to the dead-letter topic in committed transactions."),
		txnCommitted:   counter("transactions_committed_total", "Transactions committed."),
		txnAborted:     counter("transactions_aborted_total", "Transactions aborted (rebalance, produce error, shutdown, failure)."),
		sessionRestart: counter("session_restarts_total", "Times the producer was re-initialised and the group rejoined after a failure."),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "outbox", Subsystem: "eos", Name: "commit_seconds",
			Help:        "Time to end a transaction: flush, commit offsets, EndTxn.",
			ConstLabels: cl,
			Buckets:     prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "outbox", Subsystem: "eos", Name: "lag_records",
			Help:        "Records between the stage's position and the partition's last stable offset, per owned input partition.",
			ConstLabels: cl,
		}, []string{"topic", "partition"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.recordsIn, m.recordsOut, m.deadLettered, m.txnCommitted,
		m.txnAborted, m.sessionRestart, m.commitSeconds, m.lag} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("eos: metrics for stage " + strconv.Quote(stage) + " already registered: give each stage its own Name")
			}
			return nil, err
		}
	}
	return m, nil
}

// observeLag sets the lag of every partition in fs: the last stable offset
// (read_committed's end) minus the next offset the stage will read.
func (m *metrics) observeLag(fs kgo.Fetches) {
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		end := p.LastStableOffset
		if end < 0 {
			end = p.HighWatermark
		}
		next := p.Records[len(p.Records)-1].Offset + 1
		lag := end - next
		if lag < 0 {
			lag = 0
		}
		m.lag.WithLabelValues(p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(lag))
	})
}

// forget drops the lag series of partitions the stage no longer owns.
func (m *metrics) forget(parts map[string][]int32) {
	for t, ps := range parts {
		for _, p := range ps {
			m.lag.DeleteLabelValues(t, strconv.Itoa(int(p)))
		}
	}
}
