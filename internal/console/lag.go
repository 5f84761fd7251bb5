package console

import (
	"time"

	"github.com/outboxrelay/outbox/internal/ops/lagcheck"
)

// LagReport is a lagcheck.Report with the field names `outbox lag --json`
// prints, so a page's JSON and the command's compare field by field.
type LagReport struct {
	At      time.Time  `json:"at"`
	Groups  []LagGroup `json:"groups"`
	Missing []string   `json:"missing_groups"`
}

// LagGroup is one consumer group: a transform or a sink.
type LagGroup struct {
	Group      string         `json:"group"`
	Status     string         `json:"status"`
	Worst      string         `json:"worst_partition_status"`
	State      string         `json:"state"`
	Members    int            `json:"members"`
	Lag        int64          `json:"lag"`
	LagSeconds float64        `json:"lag_seconds"`
	Partitions []LagPartition `json:"partitions"`
}

// LagPartition is one partition of a group, measured against the last stable
// offset.
type LagPartition struct {
	Topic      string  `json:"topic"`
	Partition  int32   `json:"partition"`
	Committed  int64   `json:"committed"`
	LSO        int64   `json:"last_stable_offset"`
	HWM        int64   `json:"high_watermark"`
	Lag        int64   `json:"lag"`
	LagSeconds float64 `json:"lag_seconds"`
	Status     string  `json:"status"`
}

// StatusLabel is the group status as `outbox lag` prints it: ERR names the
// worst partition's cause, ERR(STALL).
func (g LagGroup) StatusLabel() string {
	if g.Status == lagcheck.StatusErr.String() {
		return g.Status + "(" + g.Worst + ")"
	}
	return g.Status
}

func newLagReport(r lagcheck.Report) LagReport {
	out := LagReport{At: r.At.UTC(), Groups: []LagGroup{}, Missing: append([]string{}, r.Missing...)}
	for _, g := range r.Groups {
		lg := LagGroup{Group: g.Group, Status: g.Status.String(), Worst: g.Worst.String(), State: g.State,
			Members: g.Members, Lag: g.Lag, LagSeconds: g.MaxLagSeconds}
		for _, p := range g.Partitions {
			lg.Partitions = append(lg.Partitions, LagPartition{Topic: p.Topic, Partition: p.Partition, Committed: p.Committed,
				LSO: p.End, HWM: p.HighWatermark, Lag: p.Lag, LagSeconds: p.LagSeconds, Status: p.Status.String()})
		}
		out.Groups = append(out.Groups, lg)
	}
	return out
}
