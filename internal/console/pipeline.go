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
