package console

import (
	"context"
	"html/template"
	"net/http"
	"sort"
	"time"

	"github.com/outboxrelay/outbox/sink"
)

// PipelineView is the pipeline page: the last snapshot, the ledger folded
// per endpoint, and the chart of the last hour.
type PipelineView struct {
	*Snapshot
	// Endpoints are the ledger counts per endpoint, one column per status.
	Endpoints []EndpointCounts `json:"endpoints"`
	// Statuses are the ledger statuses, in column order.
	Statuses []string `json:"-"`
	// Chart is the inline SVG of the last hour.
	Chart template.HTML `json:"-"`
	// Interval is the sampling interval.
	Interval string `json:"interval"`
}

// EndpointCounts is one sink endpoint's ledger rows per status.
type EndpointCounts struct {
	Endpoint string           `json:"endpoint"`
	Rows     map[string]int64 `json:"rows"`
	Total    int64            `json:"total"`
	// Counts are Rows in sink.Statuses order, for the table.
	Counts []int64 `json:"-"`
}

// firstSampleWait is how long a page waits for the first sample after start.
const firstSampleWait = 10 * time.Second

func (s *Server) pipeline(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), firstSampleWait)
	defer cancel()
	snap, ring := s.sampler.snapshot(ctx)
	if snap == nil {
		s.fail(w, r, http.StatusServiceUnavailable, "the first pipeline sample is not in yet", "the console samples every "+s.cfg.Interval.String()+"; reload in a moment")
		return
	}
	v := PipelineView{Snapshot: snap, Endpoints: foldEndpoints(snap.Ledger), Statuses: sink.Statuses,
		Chart: chart(ring, s.cfg.History), Interval: s.cfg.Interval.String()}
	s.render(w, r, http.StatusOK, "pipeline", "Pipeline", v)
}

// foldEndpoints turns sink.Status lines into one row per endpoint.
func foldEndpoints(counts []sink.StatusCount) []EndpointCounts {
	by := map[string]*EndpointCounts{}
	for _, c := range counts {
		e := by[c.Endpoint]
		if e == nil {
			e = &EndpointCounts{Endpoint: c.Endpoint, Rows: map[string]int64{}}
			by[c.Endpoint] = e
		}
		e.Rows[c.Status] += c.Rows
		e.Total += c.Rows
	}
	out := make([]EndpointCounts, 0, len(by))
	for _, e := range by {
		for _, st := range sink.Statuses {
			e.Counts = append(e.Counts, e.Rows[st])
		}
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Endpoint < out[j].Endpoint })
	return out
}

// Rows of the pipeline page's stage tables: one per slot, stage, endpoint
// or source, each with the instance that reported it.
type (
	// RelayRow is a relay slot of one instance.
	RelayRow struct {
		URL string
		RelayMetrics
	}
	// TransformRow is an eos stage of one instance.
	TransformRow struct {
		URL string
		TransformMetrics
	}
	// SinkRow is a sink endpoint of one instance.
	SinkRow struct {
		URL string
		SinkEndpointMetrics
	}
	// IngestRow is a webhook source of one instance.
	IngestRow struct {
		URL string
		IngestMetrics
	}
)

// RelayRows are the scraped relays, by slot then active first.
func (s *Snapshot) RelayRows() []RelayRow {
	var out []RelayRow
	for _, st := range s.Stages {
		for _, r := range st.Relays {
			out = append(out, RelayRow{URL: st.URL, RelayMetrics: r})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Slot != out[j].Slot {
			return out[i].Slot < out[j].Slot
		}
		return out[i].Role == RoleActive && out[j].Role != RoleActive
	})
	return out
}

// SlotRelays are the scraped relays of one slot, for the slots table.
func (s *Snapshot) SlotRelays(slot string) []RelayRow {
	var out []RelayRow
	for _, r := range s.RelayRows() {
		if r.Slot == slot {
			out = append(out, r)
		}
	}
	return out
}

// TransformRows are the scraped eos stages.
func (s *Snapshot) TransformRows() []TransformRow {
	var out []TransformRow
	for _, st := range s.Stages {
		for _, t := range st.Transforms {
			out = append(out, TransformRow{URL: st.URL, TransformMetrics: t})
		}
	}
	return out
}

// SinkRows are the scraped sink endpoints.
func (s *Snapshot) SinkRows() []SinkRow {
	var out []SinkRow
	for _, st := range s.Stages {
		for _, e := range st.SinkEndpoints {
			out = append(out, SinkRow{URL: st.URL, SinkEndpointMetrics: e})
		}
	}
	return out
}

// IngestRows are the scraped webhook sources.
func (s *Snapshot) IngestRows() []IngestRow {
	var out []IngestRow
	for _, st := range s.Stages {
		for _, src := range st.IngestSources {
			out = append(out, IngestRow{URL: st.URL, IngestMetrics: src})
		}
	}
	return out
}
