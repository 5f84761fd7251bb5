// Package opsserver serves what on-call reads from every long-running
// subcommand (relay, transform, sink, demo): Prometheus metrics on /metrics,
// liveness on /healthz and readiness on /readyz.
package opsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outboxrelay/outbox/internal/buildinfo"
)

// Config configures the server.
type Config struct {
	// Addr to listen on, e.g. ":9090". Empty disables the server.
	Addr string
	// Registry to expose. Defaults to a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Ready reports readiness; nil means ready once serving. A non-nil error
	// answers 503 with its text.
	Ready func() error
	// Logger for start and errors. Defaults to slog.Default().
	Logger *slog.Logger
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.Collector())
	return r
}

// Server is a running ops HTTP server.
type Server struct {
	srv  *http.Server
	addr string
	done chan error
}

// Start listens on cfg.Addr and serves until Stop. With an empty Addr it
// returns a nil *Server, whose Stop is a no-op.
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		return nil, nil
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.Ready != nil {
			if err := cfg.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("opsserver: listen %s: %w", cfg.Addr, err)
	}
	s := &Server{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		addr: ln.Addr().String(),
		done: make(chan error, 1),
	}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	cfg.Logger.Info("opsserver: serving /metrics /healthz /readyz", slog.String("addr", s.addr))
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string {
	if s == nil {
		return ""
	}
	return s.addr
}

// Stop shuts the server down, waiting at most until ctx is done.
func (s *Server) Stop(ctx context.Context) error {
	if s == nil {
		return nil
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("opsserver: shutdown: %w", err)
	}
	return <-s.done
}
