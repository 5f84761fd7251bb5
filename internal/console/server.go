package console

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"sync"

	"github.com/outboxrelay/outbox/sql"
)

// ErrStopped is returned by Start after Stop.
var ErrStopped = errors.New("console: stopped")

// Server is the console: an http.Handler for the pages, and a sampler that
// reads the pipeline every Config.Interval between Start and Stop. The
// binary mounts it (`outbox console`); a test serves it with httptest.
type Server struct {
	cfg     Config
	db      sql.DBTX
	sampler *sampler
	pages   *pages
	mux     *http.ServeMux

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	stopped bool
}

// New validates cfg and builds the server; nothing runs until Start.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, db: sql.InSchema(cfg.Pool, cfg.Schema)}
	var err error
	if s.pages, err = loadPages(); err != nil {
		return nil, err
	}
	if s.sampler, err = newSampler(&s.cfg, s.db); err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, fmt.Errorf("console: static assets: %w", err)
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.pipeline)
	m.HandleFunc("GET /journey", s.journey)
	m.HandleFunc("GET /dlq", s.dlqList)
	m.HandleFunc("GET /dlq/show", s.dlqShow)
	m.HandleFunc("POST /dlq/replay", s.dlqReplay)
	m.HandleFunc("POST /dlq/quarantine", s.dlqQuarantine)
	m.HandleFunc("GET /ledger", s.ledger)
	m.HandleFunc("GET /actions", s.unlock)
	m.HandleFunc("POST /", s.refuseUnknownAction)
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	m.HandleFunc("GET /readyz", s.readyz)
	s.mux = m
	return s, nil
}

// ServeHTTP serves the pages.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:; script-src 'self'; form-action 'self'; frame-ancestors 'none'")
	s.mux.ServeHTTP(w, r)
}

// Start starts the sampler and returns; the first sample follows at once.
// Start after Stop returns ErrStopped; a second Start is a no-op.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return ErrStopped
	case s.done != nil:
		return nil
	}
	// The sampler outlives Start's ctx: it runs until Stop.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		s.sampler.run(sctx)
	}()
	s.cfg.Logger.InfoContext(ctx, "console: sampling the pipeline", "interval", s.cfg.Interval, "actions", s.cfg.AllowActions)
	return nil
}

// Stop stops the sampler and waits for it, or returns ctx.Err() when ctx
// ends first. It may be called twice, or before Start.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	first := !s.stopped
	s.stopped = true
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if done == nil {
		if first {
			s.sampler.close()
		}
		return nil
	}
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("console: stop: %w", ctx.Err())
	}
	if first {
		s.sampler.close()
	}
	return nil
}

// readyz is ready once the first sample is in.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-s.sampler.first:
		_, _ = w.Write([]byte("ready\n"))
	default:
		http.Error(w, "not ready: first pipeline sample pending", http.StatusServiceUnavailable)
	}
}

// Ready reports nil once the first pipeline sample is in, for an ops server's
// /readyz.
func (s *Server) Ready() error {
	select {
	case <-s.sampler.first:
		return nil
	default:
		return errors.New("console: first pipeline sample pending")
	}
}
