package sink

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/migrations"
)

// Mode says how an endpoint retries without blocking its partition.
type Mode string

const (
	// ModeRetryTopics re-publishes a failed record to a retry tier topic and
	// consumes it when due; the source partition moves on at once. Events of one
	// key may then be called out of order.
	ModeRetryTopics Mode = "retry-topics"
	// ModeOrdered keeps per-key order: while one event retries, later events of
	// the same key wait (in memory, their ledger rows pending); other keys move on.
	ModeOrdered Mode = "ordered"
)

// Config configures a Sink. New validates it and fills in the defaults.
type Config struct {
	// Pool is the Postgres pool holding the ledger. The caller owns it. Either
	// Pool or DatabaseURL is required.
	Pool *pgxpool.Pool
	// DatabaseURL opens a pool owned by the Sink when Pool is nil.
	DatabaseURL string
	// Schema holds the ledger tables (migrations 00002_ledger.sql). Defaults to "outbox".
	Schema string

	// KafkaOpts reach the cluster (seed brokers, TLS, SASL, and any franz-go
	// knob such as kgo.InstanceID for static membership). The Sink adds the
	// consumer group, topics, read_committed and manual offset commits. Required.
	KafkaOpts []kgo.Opt
	// Group is the consumer group. Required.
	Group string
	// Name names this sink in dead letters and logs. Defaults to Group.
	Name string

	// Endpoints are the APIs to call; each consumes its own topics. At least one.
	Endpoints []Endpoint

	// Concurrency bounds how many calls run at once across all partitions. One
	// worker per partition always keeps per-partition order. Defaults to 0: no
	// bound beyond one call per partition.
	Concurrency int
	// MaxBufferedRecords per partition: past it the partition's fetching pauses
	// until the worker catches up. Defaults to 256.
	MaxBufferedRecords int
	// CommitInterval is how often marked offsets are committed. Defaults to 1s.
	CommitInterval time.Duration
	// StatusInterval is how often the ledger gauges are refreshed from Postgres.
	// Defaults to 30s.
	StatusInterval time.Duration
	// StatusWindow is how far back the ledger gauges count rows. Defaults to 24h.
	StatusWindow time.Duration
	// SkipTopicCreation leaves retry tier and dead-letter topics to `outbox
	// topics apply`. Defaults to false: Start creates missing ones with the
	// source topic's partition count.
	SkipTopicCreation bool

	// ClaimCheck resolves claim-check references (package claimcheck) before
	// the request is built: the RequestBuilder sees the stored payload as
	// Event.Payload, checked against the event's size and digest. A reference
	// that cannot be resolved is a retriable failure of class "claim_check"
	// (no call is made), then a dead letter past the last retry. Defaults to
	// nil: a record that carries a reference fails with class
	// "claim_check_unconfigured" instead of sending the stub to the API.
	ClaimCheck *claimcheck.Resolver

	// Decoder decodes values in the Confluent wire format (what a relay
	// with a Schema Registry writes) back to the JSON the writer stored
	// before the request is built: a *schema.Wire. A registry that cannot
	// answer is a retriable failure of class "schema"; a value it cannot
	// decode (an id the registry does not know) a permanent one. Defaults
	// to nil: values reach the RequestBuilder as they are.
	Decoder ValueDecoder

	// Logger receives the sink's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the sink's metrics. Defaults to none (metrics are kept
	// but not exported).
	Registerer prometheus.Registerer
}

// Endpoint is one external API and how to call it.
type Endpoint struct {
	// Name identifies the endpoint in the ledger, metrics and logs
	// ("payment", "topup"). Required; [a-z0-9_.-].
	Name string
	// Topics are the source topics whose events go to this endpoint. Required.
	Topics []string
	// Request builds the HTTP request for an event. The sink then sets
	// Idempotency-Key and the trace headers. Required; see NewTemplateRequest.
	Request RequestBuilder
	// Client sends the requests. Defaults to an http.Client with Timeout and
	// no cookie jar.
	Client *http.Client
	// Timeout bounds each call (and each status lookup). Defaults to 10s.
	Timeout time.Duration
	// Idempotent declares that the API honours Idempotency-Key: a call whose
	// outcome is unknown after a crash is retried with the same key. Defaults to
	// false: such a call is marked unknown and reconciled, never re-called blindly.
	Idempotent bool
	// Reconcile looks up whether an unknown call landed. Nil sends unknown
	// calls to the dead-letter topic for a person. See NewLookupReconciler.
	Reconcile Reconciler
	// ProviderRef extracts the provider's reference from a successful response
	// (for example a charge id). Nil records none.
	ProviderRef func(resp *http.Response, bodyHead []byte) string
	// Mode is how retries avoid blocking the partition. Defaults to ModeRetryTopics.
	Mode Mode
	// Retry is the retry policy.
	Retry RetryPolicy
	// RateLimit caps calls per second. Defaults to rate.Inf (no limit).
	RateLimit rate.Limit
	// RateBurst is the token bucket size. Defaults to 1.
	RateBurst int
	// Breaker configures the circuit breaker.
	Breaker BreakerConfig
	// DeadLetterTopic receives records past their last attempt. Defaults to
	// "<source topic>.dlt". "-" disables dead-lettering: rows then stay failed.
	DeadLetterTopic string
}

// RetryPolicy says which failures are retried, how often and how far apart.
type RetryPolicy struct {
	// Retries is how many times a retriable failure (timeout, connection error,
	// 5xx, 408, 409, 429) is retried after the first attempt. Defaults to 5;
	// negative means none.
	Retries int
	// PermanentRetries is how many times a permanent failure (any other 4xx) is
	// retried: retry.count=3 gives 4 attempts. Defaults to 0: dead-lettered at once.
	PermanentRetries int
	// Initial is the first backoff. Defaults to 1s.
	Initial time.Duration
	// Multiplier grows the backoff per attempt. Defaults to 2.
	Multiplier float64
	// Max caps the backoff (and a Retry-After). Defaults to 5m.
	Max time.Duration
	// Jitter takes a random fraction of up to Jitter off each backoff, so
	// retries of many events spread out. Defaults to 0.2; negative means none.
	Jitter float64
	// Tiers are the retry tier topics, by the delay they hold: a retry waits in
	// the largest tier not above its delay. Defaults to 1s, 10s, 1m.
	Tiers []time.Duration
}

// BreakerConfig configures an endpoint's circuit breaker.
type BreakerConfig struct {
	// Failures is how many consecutive retriable failures open the breaker.
	// Defaults to 5; negative disables the breaker.
	Failures int
	// Cooldown is how long the breaker stays open before one probe call is let
	// through. Defaults to 10s.
	Cooldown time.Duration
}

func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if c.Pool == nil && c.DatabaseURL == "" {
		return bad("Pool or DatabaseURL is required")
	}
	if c.Schema == "" {
		c.Schema = migrations.DefaultSchema
	}
	if err := migrations.ValidateSchema(c.Schema); err != nil {
		return bad("Schema: %v", err)
	}
	if len(c.KafkaOpts) == 0 {
		return bad("KafkaOpts is required (at least kgo.SeedBrokers)")
	}
	if c.Group == "" {
		return bad("Group is required")
	}
	if c.Name == "" {
		c.Name = c.Group
	}
	if len(c.Endpoints) == 0 {
		return bad("at least one Endpoint is required")
	}
	if c.Concurrency < 0 {
		return bad("Concurrency must not be negative")
	}
	if c.MaxBufferedRecords == 0 {
		c.MaxBufferedRecords = 256
	}
	if c.MaxBufferedRecords < 1 {
		return bad("MaxBufferedRecords must be positive")
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = time.Second
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 30 * time.Second
	}
	if c.StatusWindow == 0 {
		c.StatusWindow = 24 * time.Hour
	}
	if c.CommitInterval < 0 || c.StatusInterval < 0 || c.StatusWindow < 0 {
		return bad("intervals must not be negative")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	names := map[string]bool{}
	topics := map[string]string{}
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		if err := e.validate(); err != nil {
			return bad("endpoint %d (%s): %v", i, e.Name, err)
		}
		if names[e.Name] {
			return bad("endpoint name %q used twice", e.Name)
		}
		names[e.Name] = true
		for _, t := range e.Topics {
			if other, ok := topics[t]; ok {
				return bad("topic %q goes to endpoints %q and %q; one topic, one endpoint", t, other, e.Name)
			}
			topics[t] = e.Name
		}
	}
	return nil
}

func (e *Endpoint) validate() error {
	if e.Name == "" || strings.Trim(e.Name, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != "" {
		return fmt.Errorf("field Name %q must be non-empty [a-z0-9_.-]", e.Name)
	}
	if len(e.Topics) == 0 {
		return fmt.Errorf("field Topics is required")
	}
	for _, t := range e.Topics {
		if err := envelope.ValidTopic(t); err != nil {
			return err
		}
	}
	if e.Request == nil {
		return fmt.Errorf("field Request is required")
	}
	if e.Timeout == 0 {
		e.Timeout = 10 * time.Second
	}
	if e.Timeout < 0 {
		return fmt.Errorf("field Timeout must be positive")
	}
	if e.Client == nil {
		e.Client = &http.Client{Timeout: e.Timeout}
	}
	switch e.Mode {
	case "":
		e.Mode = ModeRetryTopics
	case ModeRetryTopics, ModeOrdered:
	default:
		return fmt.Errorf("field Mode %q: use %q or %q", e.Mode, ModeRetryTopics, ModeOrdered)
	}
	if e.RateLimit == 0 {
		e.RateLimit = rate.Inf
	}
	if e.RateLimit < 0 {
		return fmt.Errorf("field RateLimit must be positive")
	}
	if e.RateBurst == 0 {
		e.RateBurst = 1
	}
	if e.RateBurst < 0 {
		return fmt.Errorf("field RateBurst must be positive")
	}
	if e.Breaker.Failures == 0 {
		e.Breaker.Failures = 5
	}
	if e.Breaker.Cooldown == 0 {
		e.Breaker.Cooldown = 10 * time.Second
	}
	if e.Breaker.Cooldown < 0 {
		return fmt.Errorf("field Breaker.Cooldown must be positive")
	}
	if e.DeadLetterTopic != "" && e.DeadLetterTopic != "-" {
		if err := envelope.ValidTopic(e.DeadLetterTopic); err != nil {
			return fmt.Errorf("field DeadLetterTopic: %w", err)
		}
	}
	return e.Retry.validate()
}

func (r *RetryPolicy) validate() error {
	switch {
	case r.Retries == 0:
		r.Retries = 5
	case r.Retries < 0:
		r.Retries = 0
	}
	if r.PermanentRetries < 0 {
		return fmt.Errorf("field Retry.PermanentRetries must not be negative")
	}
	if r.Initial == 0 {
		r.Initial = time.Second
	}
	if r.Multiplier == 0 {
		r.Multiplier = 2
	}
	if r.Max == 0 {
		r.Max = 5 * time.Minute
	}
	switch {
	case r.Jitter == 0:
		r.Jitter = 0.2
	case r.Jitter < 0:
		r.Jitter = 0
	case r.Jitter > 1:
		return fmt.Errorf("field Retry.Jitter %v must be at most 1", r.Jitter)
	}
	if r.Initial < 0 || r.Max < r.Initial || r.Multiplier < 1 {
		return fmt.Errorf("field Retry: need 0 < Initial <= Max and Multiplier >= 1")
	}
	if len(r.Tiers) == 0 {
		r.Tiers = []time.Duration{time.Second, 10 * time.Second, time.Minute}
	}
	for i, t := range r.Tiers {
		if t <= 0 || (i > 0 && t <= r.Tiers[i-1]) {
			return fmt.Errorf("field Retry.Tiers must be positive and ascending")
		}
	}
	return nil
}

// deadLetterTopic is where records of topic go past their last attempt; "" when disabled.
func (e *Endpoint) deadLetterTopic(topic string) string {
	switch e.DeadLetterTopic {
	case "-":
		return ""
	case "":
		return topic + ".dlt"
	}
	return e.DeadLetterTopic
}

// ctxTimeout bounds a call by the endpoint's timeout.
func (e *Endpoint) ctxTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.Timeout)
}

// ValueDecoder turns a record value back into the payload the writer
// stored; *schema.Wire is one. decoded is false for a value it leaves as
// it is.
type ValueDecoder interface {
	Decode(ctx context.Context, value []byte) (payload []byte, decoded bool, err error)
}
