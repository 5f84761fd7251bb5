package eos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// ErrNotReady is returned by Stage.Ready while the stage has no live session:
// before Start, between a failure and the restart, and after Stop.
var ErrNotReady = errors.New("eos: stage has no live Kafka session")

// ErrAlreadyStarted is returned by Start and Run on a stage that is running.
var ErrAlreadyStarted = errors.New("eos: stage already started")

// Stage is one consume-transform-produce instance. Create it with New, then
// either call Run, or Start and later Stop.
type Stage struct {
	cfg Config
	m   *metrics
	log *slog.Logger

	live    atomic.Bool
	running atomic.Bool

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	err    error

	// rejected holds inputs whose outputs the broker refused for good (a
	// record too large, say): the aborted transaction is retried with those
	// inputs dead-lettered. Touched only by the processing goroutine.
	rejected map[recordID]error
}

// New validates cfg, fills its defaults and registers the stage's metrics.
func New(cfg Config) (*Stage, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(c.Name, c.Registerer)
	if err != nil {
		return nil, err
	}
	return &Stage{
		cfg:      c,
		m:        m,
		log:      c.Logger.With(slog.String("stage", c.Name)),
		rejected: map[recordID]error{},
	}, nil
}

// Ready returns nil while the stage holds a live Kafka session, else
// ErrNotReady; it suits opsserver.Config.Ready.
func (s *Stage) Ready() error {
	if s.live.Load() {
		return nil
	}
	return ErrNotReady
}

// Start runs the stage in a goroutine that Stop waits for. ctx bounds the
// stage's life as for Run. It returns ErrAlreadyStarted if the stage runs.
func (s *Stage) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return ErrAlreadyStarted
	}
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		err := s.Run(ctx)
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}()
	return nil
}

// Stop asks a started stage to abort its open transaction, leave the group and
// return, and waits until it has or ctx is done, returning ctx.Err() then. It
// returns the error the stage stopped with, if any. Stop before Start, and a
// second Stop, are fine.
func (s *Stage) Stop(ctx context.Context) error {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Run consumes, transforms and produces until ctx is done, then aborts the open
// transaction, leaves the group and returns nil. A failed session (fenced
// producer, timed-out or unknown transaction end, lost group membership) is
// closed and a new one started after Config.RestartBackoff: initialising the
// producer again fences any zombie and resolves the last transaction, and the
// group offsets say where to resume. Run returns an error only for a client
// that cannot be built from Config.KafkaOpts.
func (s *Stage) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrAlreadyStarted
	}
	defer s.running.Store(false)
	s.log.InfoContext(ctx, "eos: stage starting",
		slog.String("group", s.cfg.Group), slog.Any("input", s.cfg.InputTopics),
		slog.String("output", s.cfg.OutputTopic), slog.String("dead_letter", s.cfg.DeadLetterTopic),
		slog.String("transactional_id", s.cfg.TransactionalID))
	for {
		sess, err := kgo.NewGroupTransactSession(s.kafkaOpts()...)
		if err != nil {
			return fmt.Errorf("eos: kafka client: %w", err)
		}
		s.live.Store(true)
		err = s.session(ctx, sess)
		s.live.Store(false)
		s.closeSession(sess)
		if ctx.Err() != nil {
			s.log.InfoContext(ctx, "eos: stage stopped")
			return nil
		}
		s.m.sessionRestart.Inc()
		s.log.WarnContext(ctx, "eos: session failed; re-initialising the producer and rejoining",
			slog.Any("error", err), slog.Duration("backoff", s.cfg.RestartBackoff))
		t := time.NewTimer(s.cfg.RestartBackoff)
		select {
		case <-ctx.Done():
			t.Stop()
			s.log.InfoContext(ctx, "eos: stage stopped")
			return nil
		case <-t.C:
		}
	}
}

func (s *Stage) kafkaOpts() []kgo.Opt {
	forget := func(_ context.Context, _ *kgo.Client, parts map[string][]int32) { s.m.forget(parts) }
	return append(slices.Clone(s.cfg.KafkaOpts),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.InputTopics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Stable fetch offsets (KIP-447, kgo.RequireStableFetchOffsets) are
		// always on in franz-go >= 1.20; the option is a deprecated no-op.
		kgo.TransactionalID(s.cfg.TransactionalID),
		kgo.TransactionTimeout(s.cfg.TransactionTimeout),
		kgo.SessionTimeout(s.cfg.SessionTimeout),
		kgo.RebalanceTimeout(s.cfg.RebalanceTimeout),
		kgo.Balancers(s.cfg.Balancers...),
		kgo.OnPartitionsRevoked(forget),
		kgo.OnPartitionsLost(forget),
		kgo.WithLogger(leveledLogger{kslog.New(s.cfg.Logger), kafkaLevel(*s.cfg.KafkaLogLevel)}),
	)
}

// closeSession leaves the group and closes the client, waiting at most
// ShutdownTimeout: a broker that stopped answering must not hang shutdown.
func (s *Stage) closeSession(sess *kgo.GroupTransactSession) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Close()
	}()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("eos: closing the Kafka client took longer than ShutdownTimeout; giving up waiting",
			slog.Duration("shutdown_timeout", s.cfg.ShutdownTimeout))
	}
}

// leveledLogger passes franz-go's messages at or above level to slog.
type leveledLogger struct {
	l     *kslog.Logger
	level kgo.LogLevel
}

func (l leveledLogger) Level() kgo.LogLevel { return min(l.level, l.l.Level()) }

func (l leveledLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	l.l.Log(level, msg, keyvals...)
}

func kafkaLevel(l slog.Level) kgo.LogLevel {
	switch {
	case l <= slog.LevelDebug:
		return kgo.LogLevelDebug
	case l <= slog.LevelInfo:
		return kgo.LogLevelInfo
	case l <= slog.LevelWarn:
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}
