package console

import (
	"net/http"
	"time"

	"github.com/outboxrelay/outbox/sink"
)

// LedgerView is the ledger page: `outbox sink status --since WINDOW`.
type LedgerView struct {
	// Window is the counted span, as asked (?window=24h).
	Window string `json:"window"`
	// Since is the start of the window.
	Since time.Time `json:"since"`
	// Counts are sink.Status's lines, the same as the command's JSON.
	Counts []sink.StatusCount `json:"counts"`
	// Endpoints fold Counts per endpoint.
	Endpoints []EndpointCounts `json:"endpoints"`
	// Statuses are the ledger statuses, in column order.
	Statuses []string `json:"-"`
	// Windows are the page's quick choices.
	Windows []string `json:"-"`
}

func (s *Server) ledger(w http.ResponseWriter, r *http.Request) {
	window := r.FormValue("window")
	if window == "" {
		window = "24h"
	}
	d, err := time.ParseDuration(window)
	if err != nil || d <= 0 {
		s.fail(w, r, http.StatusBadRequest, "window "+window+" is not a positive duration", "use a Go duration such as 1h, 24h or 168h")
		return
	}
	since := time.Now().Add(-d)
	counts, err := sink.Status(r.Context(), s.db, s.cfg.Schema, since)
	if err != nil {
		s.fail(w, r, http.StatusBadGateway, err.Error(), "")
		return
	}
	if counts == nil {
		counts = []sink.StatusCount{}
	}
	s.render(w, r, http.StatusOK, "ledger", "Ledger", LedgerView{Window: window, Since: since.UTC(), Counts: counts,
		Endpoints: foldEndpoints(counts), Statuses: sink.Statuses, Windows: []string{"1h", "6h", "24h", "168h"}})
}
