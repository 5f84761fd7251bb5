package relay

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"
)

// Relay streams one replication slot into Kafka. Build it with New and run it
// with Run.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	rt      *router
	running atomic.Bool
	active  atomic.Bool
	// topics are the topics known to exist (CreateTopics); used by one
	// session at a time.
	topics map[string]bool
}

// New validates cfg, fills in its defaults and registers the metrics on
// cfg.Registerer. It connects to nothing; Run does.
func New(cfg Config) (*Relay, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer, cfg.Slot)
	if err != nil {
		return nil, err
	}
	return &Relay{
		cfg:    cfg,
		log:    cfg.Logger.With(slog.String("slot", cfg.Slot)),
		m:      m,
		rt:     &router{eventTemplate: cfg.TopicTemplate, recordTemplate: cfg.RecordTopicTemplate, enc: cfg.Encoder, schemaDLT: cfg.SchemaDeadLetterTopic},
		topics: map[string]bool{},
	}, nil
}

// errNotActive is what Ready returns while the relay does not stream.
var errNotActive = errors.New("relay: not streaming (standby, starting or restarting)")

// Ready returns nil while the relay holds the slot and streams, for a
// readiness probe; a standby relay is alive but not ready.
func (r *Relay) Ready() error {
	if r.active.Load() {
		return nil
	}
	return errNotActive
}

// Run streams until ctx ends or a fatal error (ErrSlotInUse, ErrWALLevel,
// ErrNoPublication, ErrNoSlot, ErrSlotMoved, ErrWALLost, ErrBadSlot) occurs.
// Any other failure (Postgres or Kafka gone, a commit with unknown outcome)
// drops the connections and starts again from the slot after a backoff.
//
// When ctx ends, Run finishes the open Kafka transaction within
// Config.ShutdownTimeout (aborting it if that fails), confirms to Postgres only
// what committed, and returns ctx.Err(). Run may be called once at a time.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("relay: Run is already running")
	}
	defer r.running.Store(false)
	backoff := r.cfg.RetryBackoff
	for {
		streamed, err := r.session(ctx)
		r.active.Store(false)
		r.m.active.Set(0)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fatal(err) {
			r.log.ErrorContext(ctx, "relay: stopped", slog.Any("error", err))
			return err
		}
		r.m.sessionsFailed.Inc()
		if streamed {
			backoff = r.cfg.RetryBackoff
		}
		r.log.WarnContext(ctx, "relay: session ended; restarting from the slot", slog.Any("error", err), slog.Duration("backoff", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
