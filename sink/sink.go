package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"
)

// Sink consumes events and calls the endpoints. Build it with New, run it
// with Start and Stop (or Run).
type Sink struct {
	cfg       Config
	logger    *slog.Logger
	metrics   *metrics
	endpoints []*endpoint
	byTopic   map[string]*endpoint // source and retry tier topics
	topics    []string
	sem       chan struct{}

	ledger *ledger
	pool   *pgxpool.Pool
	client *kgo.Client

	runCtx    context.Context
	runCancel context.CancelFunc

	mu      sync.Mutex
	state   int // 0 new, 1 started, 2 stopped
	workers map[topicPartition]*worker
	done    chan struct{}
	err     error
}

type topicPartition struct {
	topic     string
	partition int32
}

// New validates cfg, fills in its defaults and returns a Sink that is not
// running yet. Errors wrap ErrInvalidConfig.
func New(cfg Config) (*Sink, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("sink: register metrics: %w", err)
	}
	s := &Sink{cfg: cfg, logger: cfg.Logger, metrics: m, byTopic: map[string]*endpoint{},
		workers: map[topicPartition]*worker{}, done: make(chan struct{})}
	if cfg.Concurrency > 0 {
		s.sem = make(chan struct{}, cfg.Concurrency)
	}
	for i := range s.cfg.Endpoints {
		e := &s.cfg.Endpoints[i]
		name := e.Name
		ep := &endpoint{
			Endpoint: e,
			limiter:  rate.NewLimiter(e.RateLimit, e.RateBurst),
			breaker: newBreaker(e.Breaker, func(st breakerState) {
				m.breakerState.WithLabelValues(name).Set(float64(st))
				if st != breakerClosed {
					cfg.Logger.Warn("sink: circuit breaker", slog.String("endpoint", name), slog.Int("state", int(st)))
				}
			}),
		}
		s.endpoints = append(s.endpoints, ep)
		for _, t := range e.Topics {
			s.byTopic[t] = ep
			s.topics = append(s.topics, t)
			if e.Mode == ModeRetryTopics {
				for _, tier := range e.Retry.Tiers {
					rt := RetryTopic(t, tier)
					s.byTopic[rt] = ep
					s.topics = append(s.topics, rt)
				}
			}
		}
	}
	return s, nil
}

// Start connects, takes the ledger owner lock, creates missing retry and
// dead-letter topics, joins the consumer group and returns once consuming
// runs in the background. It fails with ErrAlreadyStarted or ErrStopped when
// called twice or after Stop.
func (s *Sink) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case 1:
		return ErrAlreadyStarted
	case 2:
		return ErrStopped
	}
	pool := s.cfg.Pool
	if pool == nil {
		if pool, err = pgxpool.New(ctx, s.cfg.DatabaseURL); err != nil {
			return fmt.Errorf("sink: connect to Postgres: %w", err)
		}
	}
	closeAll := func() {
		if s.cfg.Pool == nil {
			pool.Close()
		}
	}
	s.pool = pool
	s.ledger = newLedger(pool, s.cfg.Schema)
	if err := s.ledger.takeOwnerLock(ctx); err != nil {
		closeAll()
		return err
	}
	if !s.cfg.SkipTopicCreation {
		if err := s.createTopics(ctx); err != nil {
			s.ledger.releaseOwnerLock(ctx)
			closeAll()
			return err
		}
	}
	opts := append([]kgo.Opt{}, s.cfg.KafkaOpts...)
	opts = append(opts,
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(s.cfg.CommitInterval),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
	)
	s.runCtx, s.runCancel = context.WithCancel(context.WithoutCancel(ctx))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		s.runCancel()
		s.ledger.releaseOwnerLock(ctx)
		closeAll()
		return fmt.Errorf("sink: kafka client: %w", err)
	}
	s.client = cl
	s.state = 1
	s.logger.InfoContext(ctx, "sink: started", slog.String("group", s.cfg.Group), slog.Any("topics", s.topics),
		slog.Int("owner", int(s.ledger.owner)))
	go s.run()
	return nil
}

// Stop stops consuming, lets calls under way finish and be recorded, commits
// the marked offsets and closes. It may be called twice or before Start; it
// returns ctx.Err() when ctx ends first (the shutdown then goes on in the
// background).
func (s *Sink) Stop(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case 0:
		s.state = 2
		close(s.done)
		s.mu.Unlock()
		return nil
	case 1:
		s.state = 2
		s.runCancel()
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run starts the sink, runs it until ctx is done or it fails, then stops it
// within shutdownTimeout. It returns the failure, or nil after a clean stop.
func (s *Sink) Run(ctx context.Context, shutdownTimeout time.Duration) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-s.done:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := s.Stop(sctx); err != nil {
		return fmt.Errorf("sink: stop: %w", err)
	}
	return s.Err()
}

// Done is closed once the sink has stopped (after Stop, or on a failure).
func (s *Sink) Done() <-chan struct{} { return s.done }

// Err is why the sink stopped on its own (ErrOwnerLockLost), nil otherwise.
func (s *Sink) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Sink) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.logger.Error("sink: stopping", slog.Any("error", err))
	s.runCancel()
}

func (s *Sink) acquire(ctx context.Context) error {
	if s.sem == nil {
		return nil
	}
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Sink) release() {
	if s.sem != nil {
		<-s.sem
	}
}

func (s *Sink) run() {
	ctx := s.runCtx
	var loops sync.WaitGroup
	loops.Add(2)
	go func() { defer loops.Done(); s.statusLoop(ctx) }()
	go func() { defer loops.Done(); s.lockLoop(ctx) }()
	for ctx.Err() == nil {
		fs := s.client.PollFetches(ctx)
		if fs.IsClientClosed() || ctx.Err() != nil {
			s.client.AllowRebalance()
			break
		}
		fs.EachError(func(t string, p int32, err error) {
			s.logger.WarnContext(ctx, "sink: fetch", slog.String("topic", t), slog.Int("partition", int(p)), slog.Any("error", err))
		})
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			s.mu.Lock()
			w := s.workers[topicPartition{p.Topic, p.Partition}]
			s.mu.Unlock()
			if w != nil {
				w.push(p.Records)
			}
		})
		s.client.AllowRebalance()
	}
	s.stopWorkers(nil)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := s.client.CommitMarkedOffsets(cctx); err != nil {
		s.logger.Warn("sink: final commit", slog.Any("error", err))
	}
	cancel()
	s.client.Close()
	loops.Wait()
	s.ledger.releaseOwnerLock(context.Background())
	if s.cfg.Pool == nil {
		s.pool.Close()
	}
	s.logger.Info("sink: stopped", slog.String("group", s.cfg.Group))
	s.mu.Lock()
	s.state = 2
	s.mu.Unlock()
	close(s.done)
}

func (s *Sink) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runCtx.Err() != nil {
		return
	}
	for t, ps := range assigned {
		ep := s.byTopic[t]
		if ep == nil {
			continue
		}
		for _, p := range ps {
			tp := topicPartition{t, p}
			if s.workers[tp] != nil {
				continue
			}
			w := newWorker(s, ep, t, p)
			s.workers[tp] = w
			if w.tier {
				go w.runTier()
			} else {
				go w.run()
			}
		}
	}
}

func (s *Sink) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	s.stopWorkers(revoked)
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		s.logger.WarnContext(ctx, "sink: commit on revoke", slog.Any("error", err))
	}
}

func (s *Sink) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.stopWorkers(lost)
}

// stopWorkers stops the workers of the given partitions (all when nil) and
// waits for them.
func (s *Sink) stopWorkers(which map[string][]int32) {
	s.mu.Lock()
	var stop []*worker
	for tp, w := range s.workers {
		if which != nil {
			found := false
			for _, p := range which[tp.topic] {
				found = found || p == tp.partition
			}
			if !found {
				continue
			}
		}
		stop = append(stop, w)
		delete(s.workers, tp)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range stop {
		wg.Add(1)
		go func() { defer wg.Done(); w.stop() }()
	}
	wg.Wait()
}

// lockLoop watches the owner-lock session; losing it stops the sink, since
// other instances may then take over its in-flight rows.
func (s *Sink) lockLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.ledger.checkOwnerLock(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				s.fail(err)
				return
			}
		}
	}
}

// statusLoop refreshes the ledger gauges.
func (s *Sink) statusLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.StatusInterval)
	defer t.Stop()
	for {
		counts, err := Status(ctx, s.pool, s.cfg.Schema, time.Now().Add(-s.cfg.StatusWindow))
		if err == nil {
			s.metrics.ledgerRows.Reset()
			for _, c := range counts {
				s.metrics.ledgerRows.WithLabelValues(c.Endpoint, c.Status).Set(float64(c.Rows))
			}
		} else if ctx.Err() == nil {
			s.logger.WarnContext(ctx, "sink: ledger status", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// createTopics creates the retry tier and dead-letter topics that are
// missing, with the partition count of their source topic.
func (s *Sink) createTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(s.cfg.KafkaOpts...)
	if err != nil {
		return fmt.Errorf("sink: admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var sources []string
	for _, ep := range s.endpoints {
		sources = append(sources, ep.Topics...)
	}
	details, err := adm.ListTopics(ctx, sources...)
	if err != nil {
		return fmt.Errorf("sink: list topics: %w", err)
	}
	want := map[string]int32{}
	for _, ep := range s.endpoints {
		for _, t := range ep.Topics {
			d, ok := details[t]
			if !ok || d.Err != nil {
				return fmt.Errorf("sink: source topic %s: missing or unreadable (create it with `outbox topics apply`)", t)
			}
			n := int32(len(d.Partitions))
			if dlt := ep.deadLetterTopic(t); dlt != "" {
				want[dlt] = max(want[dlt], n)
			}
			if ep.Mode == ModeRetryTopics {
				for _, tier := range ep.Retry.Tiers {
					want[RetryTopic(t, tier)] = n
				}
			}
		}
	}
	for name, n := range want {
		resp, err := adm.CreateTopic(ctx, n, -1, nil, name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("sink: create topic %s: %w", name, err)
		}
	}
	return nil
}

// Ready reports whether the sink is consuming: nil once started and until it
// stops, for /readyz.
func (s *Sink) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == 0:
		return errors.New("sink: not started")
	case s.state == 2 || s.err != nil:
		return ErrStopped
	}
	return nil
}
