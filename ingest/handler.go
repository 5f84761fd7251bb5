package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/outboxrelay/outbox/outbox"
	"github.com/outboxrelay/outbox/sql"
)

// Handler is the http.Handler that receives webhooks at
// POST /webhooks/{source}. Mount it at the root of a server (or under a
// prefix with http.StripPrefix). It is safe for concurrent use.
type Handler struct {
	cfg     Config
	sources map[string]*Source
	writer  *outbox.Writer
	q       *sql.Queries
	m       *metrics
	mux     *http.ServeMux
}

// New validates cfg once and returns the Handler. Every error wraps
// ErrConfig, naming the source and field.
func New(cfg Config) (*Handler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w, err := outbox.New(outbox.Config{Schema: cfg.Schema, KeyTTL: cfg.DedupWindow, MaxPayloadBytes: int(max(cfg.MaxBodyBytes, outbox.DefaultMaxPayloadBytes))})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, sources: map[string]*Source{}, writer: w, q: sql.New(), m: m, mux: http.NewServeMux()}
	for i := range cfg.Sources {
		s := cfg.Sources[i]
		h.sources[s.Name] = &s
	}
	h.mux.HandleFunc("/webhooks/{source}", h.serveWebhook)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		errorReply(http.StatusNotFound, "not_found", "webhooks are received at POST /webhooks/{source}").write(w)
	})
	return h, nil
}

// ServeHTTP serves POST /webhooks/{source}.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Ready reports whether Postgres answers and holds the webhook_entities
// table (migration 00005), for /readyz: without either every delivery would
// be answered 503.
func (h *Handler) Ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.q.ProbeWebhookEntities(ctx, sql.InSchema(h.cfg.Pool, h.cfg.Schema)); err != nil {
		return fmt.Errorf("ingest: postgres (is migration 00005 applied? run outbox migrate up): %w", err)
	}
	return nil
}

// Answer bodies are JSON: {"outcome": ...} for 2xx, {"error": CODE,
// "detail": TEXT} otherwise. Codes are listed in docs/ingest.md.
type answer struct {
	Outcome    string `json:"outcome"`
	Source     string `json:"source"`
	DeliveryID string `json:"delivery_id"`
	Entity     string `json:"entity,omitempty"`
	Version    *int64 `json:"version,omitempty"`
	UpdatedAt  string `json:"updated_at,omitempty"`
	Detail     string `json:"detail,omitempty"`
}

type errorBody struct {
	Error  string `json:"error"`
	Detail string `json:"detail"`
}

// reply is an answer not yet written: metrics are counted before it is
// sent, so a sender that reads the answer sees them.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func errorReply(status int, code, detail string) reply {
	b, _ := json.Marshal(errorBody{Error: code, Detail: detail})
	return reply{status: status, header: http.Header{"Content-Type": {"application/json"}}, body: append(b, '\n')}
}

func (r reply) write(w http.ResponseWriter) {
	for k, vs := range r.header {
		w.Header()[k] = vs
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body)
}

func (h *Handler) serveWebhook(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	name := r.PathValue("source")
	src, ok := h.sources[name]
	if !ok {
		h.m.webhooks.WithLabelValues("", outcomeUnknownSource).Inc()
		errorReply(http.StatusNotFound, "unknown_source", fmt.Sprintf("no source %q is configured; check the URL given to the provider", name)).write(w)
		return
	}
	outcome, rep := h.serve(w, r, src)
	h.m.webhooks.WithLabelValues(src.Name, outcome).Inc()
	h.m.seconds.WithLabelValues(src.Name).Observe(time.Since(began).Seconds())
	rep.write(w)
}

// serve handles one delivery of src and returns its outcome and answer.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, src *Source) (string, reply) {
	ctx := r.Context()
	log := h.cfg.Logger.With(slog.String("source", src.Name))
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return outcomeInvalid, errorReply(http.StatusMethodNotAllowed, "method_not_allowed", "webhooks are POSTed")
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		return outcomeInvalid, errorReply(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body of %d bytes is over the limit of %d (max_body_bytes)", r.ContentLength, h.cfg.MaxBodyBytes))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return outcomeInvalid, errorReply(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body is over the limit of %d bytes (max_body_bytes)", h.cfg.MaxBodyBytes))
		}
		return outcomeInvalid, errorReply(http.StatusBadRequest, "unreadable", "ingest: read body: "+err.Error())
	}
	if err := src.verify(r.Header, body, h.cfg.Now()); err != nil {
		log.WarnContext(ctx, "ingest: verify signature", slog.Any("error", err), slog.String("remote", r.RemoteAddr))
		return outcomeBadSignature, errorReply(http.StatusUnauthorized, "bad_signature", "ingest: verify signature: "+err.Error())
	}
	d, err := src.parse(r.Header, body)
	if err != nil {
		log.WarnContext(ctx, "ingest: parse delivery", slog.Any("error", err))
		code := "unmapped"
		if errors.Is(err, ErrNotJSON) {
			code = "not_json"
		}
		return outcomeInvalid, errorReply(http.StatusBadRequest, code, "ingest: "+err.Error())
	}
	log = log.With(slog.String("delivery_id", d.id))
	resp, outcome, err := h.store(ctx, src, d, body)
	switch {
	case errors.Is(err, outbox.ErrKeyInFlight):
		return outcomeInFlight, errorReply(http.StatusConflict, "in_flight", "this delivery is being written by another request now; retry later to get its answer")
	case errors.Is(err, outbox.ErrKeyMismatch):
		log.WarnContext(ctx, "ingest: delivery id reused with another body")
		return outcomeInvalid, errorReply(http.StatusUnprocessableEntity, "delivery_id_reused", "delivery id "+d.id+" was received before with a different body")
	case err != nil:
		log.ErrorContext(ctx, "ingest: store delivery", slog.Any("error", err))
		return outcomeError, errorReply(http.StatusServiceUnavailable, "unavailable", "the delivery could not be stored; nothing was kept, retry")
	}
	hook(hookAfterCommit)
	rep := reply{status: resp.StatusCode, header: resp.Header, body: resp.Body}
	if rep.header == nil {
		rep.header = http.Header{}
	}
	if outcome == outcomeDuplicate {
		rep.header.Set("Idempotent-Replayed", "true")
	}
	log.DebugContext(ctx, "ingest: delivery", slog.String("outcome", outcome))
	return outcome, rep
}
