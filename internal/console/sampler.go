package console

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/ops/deadletter"
	"github.com/outboxrelay/outbox/internal/ops/lagcheck"
	"github.com/outboxrelay/outbox/sink"
	"github.com/outboxrelay/outbox/sql"
)

// Snapshot is one sample of the whole pipeline: what the pipeline page shows.
type Snapshot struct {
	// At is when the sample began.
	At time.Time `json:"at"`
	// Took is how long the sample took.
	Took time.Duration `json:"took_ns"`
	// Slots are the database's replication slots (the relays).
	Slots []Slot `json:"slots"`
	// Lag is every consumer group's lag, in the shape `outbox lag --json` prints.
	Lag LagReport `json:"lag"`
	// Ledger is sink.Status over the last 24 hours: `outbox sink status`.
	Ledger []sink.StatusCount `json:"ledger"`
	// DeadLetters counts the records of each dead-letter topic, as `outbox
	// dlq list` without filters counts them.
	DeadLetters []DLQCount `json:"dead_letters"`
	// Stages are the stage processes of Config.StageMetrics, as their
	// /metrics show them, in that order; an instance that did not answer
	// has its Error set (and is not counted in Errors).
	Stages []StageInstance `json:"stages"`
	// Errors are the parts of the sample that failed, each naming the part.
	Errors []string `json:"errors"`
}

// DLQCount is how many dead letters one topic holds.
type DLQCount struct {
	Topic string `json:"topic"`
	Count int    `json:"count"`
}

// ledgerWindow is the pipeline page's ledger window, `outbox sink status`'s
// default --since.
const ledgerWindow = 24 * time.Hour

// point is one sample in the chart's ring.
type point struct {
	at          time.Time
	lag         map[string]int64 // per group
	deadLetters int
}

// sampler owns the lag checker (which is not safe for concurrent use) and
// the last snapshot; one goroutine, owned by Server.Start and waited for by
// Server.Stop, samples every Config.Interval.
type sampler struct {
	cfg     *Config
	db      sql.DBTX
	checker *lagcheck.Checker
	stages  *stageScraper

	mu      sync.Mutex
	last    *Snapshot
	ring    []point
	first   chan struct{} // closed after the first sample
	firstMu sync.Once
}

func newSampler(cfg *Config, db sql.DBTX) (*sampler, error) {
	checker, err := lagcheck.New(lagcheck.Config{Groups: cfg.Groups, Window: cfg.Window, ProbeTimeout: cfg.ProbeTimeout}, cfg.KafkaOpts...)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return &sampler{cfg: cfg, db: db, checker: checker, stages: newStageScraper(cfg), first: make(chan struct{})}, nil
}

func (s *sampler) close() {
	s.checker.Close()
	s.stages.close()
}

// run samples until ctx ends.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		snap := s.sample(ctx)
		if ctx.Err() != nil {
			return
		}
		s.store(snap)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) store(snap *Snapshot) {
	s.mu.Lock()
	s.last = snap
	p := point{at: snap.At, lag: map[string]int64{}}
	for _, g := range snap.Lag.Groups {
		p.lag[g.Group] = g.Lag
	}
	for _, d := range snap.DeadLetters {
		p.deadLetters += d.Count
	}
	s.ring = append(s.ring, p)
	cut := 0
	for cut < len(s.ring) && snap.At.Sub(s.ring[cut].at) > s.cfg.History {
		cut++
	}
	s.ring = s.ring[cut:]
	s.mu.Unlock()
	s.firstMu.Do(func() { close(s.first) })
}

// snapshot returns the last sample, waiting for the first one until ctx ends;
// nil if there is none yet.
func (s *sampler) snapshot(ctx context.Context) (*Snapshot, []point) {
	select {
	case <-s.first:
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, append([]point(nil), s.ring...)
}

// sample reads every part of the pipeline; a part that fails is named in
// Errors and the rest is still shown.
func (s *sampler) sample(ctx context.Context) *Snapshot {
	snap := &Snapshot{At: time.Now(), Errors: []string{}, Stages: []StageInstance{}}
	fail := func(part string, err error) { snap.Errors = append(snap.Errors, part+": "+err.Error()) }

	// The stage scrapes run beside the other parts; each is bounded by
	// Config.StageTimeout.
	scraped := make(chan []StageInstance, 1)
	go func() { scraped <- s.stages.scrape(ctx) }()
	defer func() {
		if st := <-scraped; st != nil {
			snap.Stages = st
		}
		snap.Took = time.Since(snap.At)
	}()

	if slots, err := readSlots(ctx, s.db); err != nil {
		fail("slots", err)
	} else {
		snap.Slots = slots
	}
	if r, err := s.checker.Sample(ctx); err != nil {
		fail("lag", err)
		snap.Lag = LagReport{At: snap.At.UTC(), Groups: []LagGroup{}, Missing: []string{}}
	} else {
		snap.Lag = newLagReport(r)
	}
	if counts, err := sink.Status(ctx, s.db, s.cfg.Schema, time.Now().Add(-ledgerWindow)); err != nil {
		fail("ledger", err)
	} else {
		snap.Ledger = counts
	}
	topics, err := dlqTopics(ctx, s.cfg)
	if err != nil {
		fail("dead letters", err)
	}
	for _, t := range topics {
		n, err := countDeadLetters(ctx, s.cfg.KafkaOpts, t)
		if err != nil {
			fail("dead letters "+t, err)
			continue
		}
		snap.DeadLetters = append(snap.DeadLetters, DLQCount{Topic: t, Count: n})
	}
	return snap
}

// dlqTopics returns Config.DLQTopics, or the cluster's topics named *.dlt.
func dlqTopics(ctx context.Context, cfg *Config) ([]string, error) {
	if len(cfg.DLQTopics) > 0 {
		return cfg.DLQTopics, nil
	}
	cl, err := kgo.NewClient(cfg.KafkaOpts...)
	if err != nil {
		return nil, fmt.Errorf("console: kafka client: %w", err)
	}
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("console: list topics: %w", err)
	}
	var out []string
	for name := range td {
		if strings.HasSuffix(name, ".dlt") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// countDeadLetters counts what `outbox dlq list --topic T` lists; a topic
// that does not exist holds none.
func countDeadLetters(ctx context.Context, opts []kgo.Opt, topic string) (int, error) {
	n := 0
	err := deadletter.List(ctx, opts, topic, deadletter.Filter{}, func(deadletter.Letter) error { n++; return nil })
	if errors.Is(err, deadletter.ErrTopicNotFound) {
		return 0, nil
	}
	return n, err
}
