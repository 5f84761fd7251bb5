package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server serves a Handler on a TCP address: what `outbox ingest --listen`
// runs. Its Stop finishes the requests under way (each one's transaction
// commits or rolls back; none is cut between COMMIT and its answer unless
// the deadline passes).
type Server struct {
	srv      *http.Server
	ln       net.Listener
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

// NewServer returns a Server for h on addr (":8081"); Start listens.
func NewServer(addr string, h http.Handler) *Server {
	return &Server{srv: &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute,
	}}
}

// Start listens and returns once the address is bound; requests are served
// until Stop.
func (s *Server) Start(context.Context) error {
	ln, err := net.Listen("tcp", s.srv.Addr)
	if err != nil {
		return fmt.Errorf("ingest: listen %s: %w", s.srv.Addr, err)
	}
	s.ln, s.done = ln, make(chan error, 1)
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return nil
}

// Addr is the bound address once started ("127.0.0.1:43567").
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Stop stops accepting deliveries and waits for those under way, until ctx
// is done: then it closes the connections and returns ctx.Err(). It may be
// called twice, or before Start.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		if s.done == nil {
			return
		}
		if err := s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close()
			<-s.done
			s.stopErr = err
			return
		}
		s.stopErr = <-s.done
	})
	return s.stopErr
}
