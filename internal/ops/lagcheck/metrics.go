package lagcheck

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exposes a Report as Prometheus gauges:
//
//	outbox_consumer_lag_records{group,topic,partition}
//	outbox_consumer_lag_seconds{group,topic,partition}
//	outbox_consumer_partition_status{group,topic,partition}  0 OK, 1 WARN, 3 STOP, 4 STALL, 5 REWIND
//	outbox_consumer_group_status{group}                      0 OK, 1 WARN, 2 ERR
//	outbox_consumer_group_lag_records{group}
//	outbox_consumer_group_lag_seconds{group}                 age of the group's oldest unconsumed record
type Metrics struct {
	lag, lagSeconds, partStatus   *prometheus.GaugeVec
	groupStatus, groupLag, groupS *prometheus.GaugeVec
}

// NewMetrics registers the gauges with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	part := []string{"group", "topic", "partition"}
	m := &Metrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outbox_consumer_lag_records",
			Help: "Records between the group's committed offset and the partition's last stable offset."}, part),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outbox_consumer_lag_seconds",
			Help: "Age of the oldest committed record the group has not consumed."}, part),
		partStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outbox_consumer_partition_status",
			Help: "Burrow partition status: 0 OK, 1 WARN, 3 STOP, 4 STALL, 5 REWIND."}, part),
		groupStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outbox_consumer_group_status",
			Help: "Burrow group status: 0 OK, 1 WARN, 2 ERR."}, []string{"group"}),
		groupLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outbox_consumer_group_lag_records",
			Help: "Sum of the group's lag in records."}, []string{"group"}),
		groupS: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outbox_consumer_group_lag_seconds",
			Help: "Age of the oldest record the group has not consumed, over its partitions."}, []string{"group"}),
	}
	for _, c := range []prometheus.Collector{m.lag, m.lagSeconds, m.partStatus, m.groupStatus, m.groupLag, m.groupS} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("lagcheck: register metrics: %w", err)
		}
	}
	return m, nil
}

// Observe replaces the gauges' values with the report's; series of groups or
// partitions no longer reported disappear.
func (m *Metrics) Observe(r Report) {
	for _, v := range []*prometheus.GaugeVec{m.lag, m.lagSeconds, m.partStatus, m.groupStatus, m.groupLag, m.groupS} {
		v.Reset()
	}
	for _, g := range r.Groups {
		m.groupStatus.WithLabelValues(g.Group).Set(float64(g.Status))
		m.groupLag.WithLabelValues(g.Group).Set(float64(g.Lag))
		m.groupS.WithLabelValues(g.Group).Set(g.MaxLagSeconds)
		for _, p := range g.Partitions {
			l := []string{g.Group, p.Topic, strconv.Itoa(int(p.Partition))}
			m.lag.WithLabelValues(l...).Set(float64(p.Lag))
			m.lagSeconds.WithLabelValues(l...).Set(p.LagSeconds)
			m.partStatus.WithLabelValues(l...).Set(float64(p.Status))
		}
	}
}
