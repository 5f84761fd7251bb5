package console

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Listening is a console serving on a port: the server, its sampler and the
// HTTP listener, stopped together by Stop.
type Listening struct {
	srv      *Server
	hs       *http.Server
	addr     net.Addr
	done     chan struct{}
	serveErr error // set before done closes
}

// Listen builds a Server from cfg, starts its sampler and serves it on addr
// (":0" or "127.0.0.1:0" for a free port) until Stop. It is what `outbox
// console`, a stage's --console flag and the demo run.
func Listen(ctx context.Context, cfg Config, addr string) (*Listening, error) {
	srv, err := New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("console: listen %s: %w", addr, err)
	}
	if err := srv.Start(ctx); err != nil {
		_ = ln.Close()
		return nil, err
	}
	l := &Listening{srv: srv, hs: &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr(), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		if err := l.hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			l.serveErr = fmt.Errorf("console: serve: %w", err)
		}
	}()
	return l, nil
}

// URL is where the console answers: http://ADDR/.
func (l *Listening) URL() string { return "http://" + l.addr.String() + "/" }

// Server is the console being served.
func (l *Listening) Server() *Server { return l.srv }

// Done is closed when the HTTP server has ended, by Stop or on its own
// (then Err says why), for a command that must exit then.
func (l *Listening) Done() <-chan struct{} { return l.done }

// Err is why the HTTP server ended on its own, once Done is closed; nil
// after Stop.
func (l *Listening) Err() error {
	<-l.done
	return l.serveErr
}

// Stop shuts the HTTP server down (requests in flight may finish until ctx
// ends) and stops the sampler.
func (l *Listening) Stop(ctx context.Context) error {
	err := l.hs.Shutdown(ctx)
	<-l.done
	return errors.Join(err, l.serveErr, l.srv.Stop(ctx))
}
