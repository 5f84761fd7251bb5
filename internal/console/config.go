package console

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/migrations"
)

// ErrInvalidConfig is returned by New when the Config cannot work; the
// message names the field.
var ErrInvalidConfig = errors.New("console: invalid config")

// Config configures a Server. New validates it and fills in the defaults.
type Config struct {
	// Pool reaches the database holding the outbox and the sink ledger. The
	// caller owns it. Required.
	Pool *pgxpool.Pool
	// Schema holds the outbox tables. Defaults to "outbox".
	Schema string
	// KafkaOpts reach the cluster (seed brokers, TLS, SASL). Required.
	KafkaOpts []kgo.Opt

	// Groups are the consumer groups the pipeline page shows. Defaults to
	// every group on the cluster, as `outbox lag` without --group.
	Groups []string
	// DLQTopics are the dead-letter topics. Defaults to every topic whose
	// name ends in ".dlt" (the sink's and the transform's default), looked
	// up at every sample.
	DLQTopics []string
	// JourneyTopics are searched for an order's records besides the topics
	// its outbox rows route to (the row's topic, its fan-out topics, or for
	// an empty topic the relay's default routing, envelope.DefaultTopic and
	// its ".records" twin): the transform's command topics, and the topics of
	// a relay run with other --topic-template values. Defaults to none.
	JourneyTopics []string

	// StageMetrics are the /metrics URLs of the stage processes (their
	// --metrics-addr): every sample scrapes them for what only a process
	// knows (a relay's active or standby role, a sink's breaker state,
	// rates). "host:port" means http://host:port/metrics. Defaults to none.
	StageMetrics []string
	// StageTimeout bounds one scrape of a stage's /metrics; the scrapes run
	// in parallel. Defaults to 2s.
	StageTimeout time.Duration

	// Interval is how often the pipeline is sampled. Defaults to 5s.
	Interval time.Duration
	// Window is how many lag samples per partition the status judges
	// (Burrow's window, `outbox lag --window`). Defaults to 3.
	Window int
	// History is how far back the pipeline chart goes. Defaults to 1h.
	History time.Duration
	// ProbeTimeout bounds the lag probe for the oldest unconsumed record
	// (`outbox lag --probe-timeout`). Defaults to 2s.
	ProbeTimeout time.Duration
	// JourneyScanLimit caps the records a journey search reads per
	// partition. Defaults to 20000.
	JourneyScanLimit int
	// JourneyTimeout bounds a journey's Kafka search. Defaults to 5s.
	JourneyTimeout time.Duration

	// AllowActions lets the console replay and quarantine dead letters.
	// Defaults to false: every POST is refused with 403 and the console never
	// writes.
	AllowActions bool
	// Token is what an action request must carry, as "Authorization: Bearer
	// TOKEN" or as the password of basic auth. Required with AllowActions.
	Token string
	// MaxReplays is `outbox dlq replay --max-replays`: a dead letter replayed
	// this often is quarantined instead. Defaults to 3.
	MaxReplays int

	// Logger receives the console's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Pool == nil {
		bad("Pool is required")
	}
	if len(c.KafkaOpts) == 0 {
		bad("KafkaOpts are required")
	}
	if c.Schema == "" {
		c.Schema = migrations.DefaultSchema
	}
	if err := migrations.ValidateSchema(c.Schema); err != nil {
		bad("Schema: %v", err)
	}
	for _, t := range append(append([]string{}, c.DLQTopics...), c.JourneyTopics...) {
		if err := envelope.ValidTopic(t); err != nil {
			bad("topic: %v", err)
		}
	}
	stageURLs := make([]string, 0, len(c.StageMetrics)) // not the caller's slice
	for _, u := range c.StageMetrics {
		n, err := normalizeMetricsURL(u)
		if err != nil {
			bad("StageMetrics: %v", err)
			continue
		}
		stageURLs = append(stageURLs, n)
	}
	c.StageMetrics = stageURLs
	if c.AllowActions && c.Token == "" {
		bad("AllowActions needs a Token: actions are never open to anyone who can reach the port")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Interval, 5*time.Second)
	def(&c.History, time.Hour)
	def(&c.ProbeTimeout, 2*time.Second)
	def(&c.JourneyTimeout, 5*time.Second)
	def(&c.StageTimeout, 2*time.Second)
	if c.Window <= 0 {
		c.Window = 3
	}
	if c.JourneyScanLimit <= 0 {
		c.JourneyScanLimit = 20000
	}
	if c.MaxReplays <= 0 {
		c.MaxReplays = 3
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}
