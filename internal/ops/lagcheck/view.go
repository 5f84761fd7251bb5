package lagcheck

import "time"

// View is a Report in the shape `outbox lag --json` prints and the console's
// pages serve, so the two compare field by field.
type View struct {
	At      time.Time   `json:"at"`
	Groups  []ViewGroup `json:"groups"`
	Missing []string    `json:"missing_groups"`
}

// ViewGroup is one consumer group of a View.
type ViewGroup struct {
	Group      string          `json:"group"`
	Status     string          `json:"status"`
	Worst      string          `json:"worst_partition_status"`
	State      string          `json:"state"`
	Members    int             `json:"members"`
	Lag        int64           `json:"lag"`
	LagSeconds float64         `json:"lag_seconds"`
	Partitions []ViewPartition `json:"partitions"`
}

// ViewPartition is one partition of a group, measured against the last
// stable offset.
type ViewPartition struct {
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
func (g ViewGroup) StatusLabel() string {
	if g.Status == StatusErr.String() {
		return g.Status + "(" + g.Worst + ")"
	}
	return g.Status
}

// NewView is r as a View, in UTC, with empty lists rather than null.
func NewView(r Report) View {
	out := View{At: r.At.UTC(), Groups: []ViewGroup{}, Missing: append([]string{}, r.Missing...)}
	for _, g := range r.Groups {
		vg := ViewGroup{Group: g.Group, Status: g.Status.String(), Worst: g.Worst.String(), State: g.State,
			Members: g.Members, Lag: g.Lag, LagSeconds: g.MaxLagSeconds}
		for _, p := range g.Partitions {
			vg.Partitions = append(vg.Partitions, ViewPartition{Topic: p.Topic, Partition: p.Partition, Committed: p.Committed,
				LSO: p.End, HWM: p.HighWatermark, Lag: p.Lag, LagSeconds: p.LagSeconds, Status: p.Status.String()})
		}
		out.Groups = append(out.Groups, vg)
	}
	return out
}
