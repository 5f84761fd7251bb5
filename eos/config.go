package eos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/envelope"
)

// TransformFunc maps one input record to the records to produce for it. It is
// called once per record, in partition order, on the stage's one processing
// goroutine, and may be called again for the same record when a transaction is
// aborted (after a rebalance, a crash or an error): it must not have side
// effects outside the records it returns. It must return new records, not r
// itself: the stage keeps r until the transaction ends.
//
// A returned record with an empty Topic goes to Config.OutputTopic. Returning
// no records consumes the input and produces nothing (a filter). Returning an
// error, or panicking, sends the input to the dead-letter topic instead, in the
// same transaction; the stream moves on. The context is cancelled when the
// stage stops.
type TransformFunc func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error)

// Config configures a Stage. Zero values take the documented defaults; New
// validates the result once.
type Config struct {
	// Name names the stage instance in logs, metrics (label "stage") and the
	// dead-letter headers. Defaults to Group.
	Name string

	// KafkaOpts reach the cluster (seed brokers, TLS, SASL) and may set any
	// other franz-go option. The stage appends its own consumer-group and
	// transaction options after these, so those listed on the fields below
	// win. Required: at least kgo.SeedBrokers.
	KafkaOpts []kgo.Opt

	// Group is the consumer group. Required.
	Group string
	// InputTopics are consumed from. Required.
	InputTopics []string
	// OutputTopic receives the records the transform returns without a Topic.
	// Defaults to none: such records are then dead-lettered as a transform bug.
	OutputTopic string
	// DeadLetterTopic receives rejected records with envelope.DeadLetter
	// headers, in the same transaction as the offsets that skip them. Required.
	DeadLetterTopic string

	// TransactionalID identifies this instance's producer. It must be unique
	// per running instance and stable across restarts of that instance, so a
	// restart fences its zombie predecessor and resolves its open transaction.
	// Required.
	TransactionalID string

	// Transform maps input records to output records. Required.
	Transform TransformFunc

	// ClaimCheck resolves claim-check references (package claimcheck) before
	// the transform: the transform sees the stored payload as the record's
	// value, without the claim-check headers. An output whose value is that
	// payload unchanged travels on by the same reference, so it stays small in
	// Kafka. A reference that cannot be resolved (missing, pruned, digest
	// mismatch, store down) dead-letters the record like a transform error.
	// Defaults to nil: records pass to the transform as they are.
	ClaimCheck *claimcheck.Resolver

	// Decoder decodes input values in the Confluent wire format (what a
	// relay with a Schema Registry writes) back to the JSON the writer
	// stored, before the transform: a *schema.Wire. A value it cannot
	// decode dead-letters the record (class "schema"); a registry that
	// cannot answer aborts the transaction and rebuilds the session after
	// a backoff, so an outage dead-letters nothing. Outputs are produced as
	// the transform makes them. Defaults to nil: values as they are.
	Decoder ValueDecoder

	// MaxRecordsPerTxn caps the input records in one transaction. Defaults to 1000.
	MaxRecordsPerTxn int
	// Linger is how long the stage keeps polling to fill a transaction up to
	// MaxRecordsPerTxn once it has some records. Defaults to 20ms.
	Linger time.Duration

	// TransactionTimeout is the broker-side timeout of one transaction; it must
	// be below SessionTimeout so a zombie's transaction is aborted before the
	// group hands its partitions away. Defaults to 10s.
	TransactionTimeout time.Duration
	// SessionTimeout is the consumer group session timeout. Defaults to 45s.
	SessionTimeout time.Duration
	// RebalanceTimeout bounds how long a rebalance waits for members. Defaults to 60s.
	RebalanceTimeout time.Duration
	// Balancers are the group balancers, in preference order. Defaults to
	// cooperative-sticky.
	Balancers []kgo.GroupBalancer

	// RestartBackoff is the pause before re-initialising the producer and
	// rejoining after a failed session (fenced, timed out, unknown outcome).
	// Defaults to 1s.
	RestartBackoff time.Duration
	// ShutdownTimeout bounds aborting the open transaction and leaving the
	// group when the stage stops. Defaults to 10s.
	ShutdownTimeout time.Duration

	// Logger receives the stage's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// KafkaLogLevel is the least severe franz-go message passed to Logger
	// (franz-go logs every transaction at info). Defaults to slog.LevelWarn.
	KafkaLogLevel *slog.Level
	// Registerer receives the stage's Prometheus metrics. Defaults to none
	// (metrics are kept but not exported).
	Registerer prometheus.Registerer

	// now is the clock for dead-letter timestamps; tests may set it.
	now func() time.Time
}

// Errors returned by New for an invalid Config.
var (
	// ErrInvalidConfig wraps every validation failure of New.
	ErrInvalidConfig = errors.New("eos: invalid config")
)

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	if cfg.Name == "" {
		cfg.Name = cfg.Group
	}
	if cfg.MaxRecordsPerTxn == 0 {
		cfg.MaxRecordsPerTxn = 1000
	}
	if cfg.Linger == 0 {
		cfg.Linger = 20 * time.Millisecond
	}
	if cfg.TransactionTimeout == 0 {
		cfg.TransactionTimeout = 10 * time.Second
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 45 * time.Second
	}
	if cfg.RebalanceTimeout == 0 {
		cfg.RebalanceTimeout = 60 * time.Second
	}
	if len(cfg.Balancers) == 0 {
		cfg.Balancers = []kgo.GroupBalancer{kgo.CooperativeStickyBalancer()}
	}
	if cfg.RestartBackoff == 0 {
		cfg.RestartBackoff = time.Second
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.KafkaLogLevel == nil {
		l := slog.LevelWarn
		cfg.KafkaLogLevel = &l
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}

	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(cfg.KafkaOpts) == 0 {
		bad("KafkaOpts must at least name the seed brokers")
	}
	if cfg.Group == "" {
		bad("Group is required")
	}
	if len(cfg.InputTopics) == 0 {
		bad("InputTopics is required")
	}
	for _, t := range cfg.InputTopics {
		if err := envelope.ValidTopic(t); err != nil {
			bad("InputTopics: %v", err)
		}
	}
	if cfg.OutputTopic != "" {
		if err := envelope.ValidTopic(cfg.OutputTopic); err != nil {
			bad("OutputTopic: %v", err)
		}
	}
	if cfg.DeadLetterTopic == "" {
		bad("DeadLetterTopic is required")
	} else if err := envelope.ValidTopic(cfg.DeadLetterTopic); err != nil {
		bad("DeadLetterTopic: %v", err)
	}
	for _, t := range cfg.InputTopics {
		if t == cfg.OutputTopic || t == cfg.DeadLetterTopic {
			bad("topic %q is both input and output", t)
		}
	}
	if cfg.TransactionalID == "" {
		bad("TransactionalID is required")
	}
	if cfg.Transform == nil {
		bad("Transform is required")
	}
	if cfg.MaxRecordsPerTxn < 0 {
		bad("MaxRecordsPerTxn must be positive, got %d", cfg.MaxRecordsPerTxn)
	}
	if cfg.Linger < 0 || cfg.TransactionTimeout < 0 || cfg.SessionTimeout < 0 || cfg.RebalanceTimeout < 0 ||
		cfg.RestartBackoff < 0 || cfg.ShutdownTimeout < 0 {
		bad("durations must not be negative")
	}
	if cfg.TransactionTimeout >= cfg.SessionTimeout {
		bad("TransactionTimeout (%v) must be below SessionTimeout (%v)", cfg.TransactionTimeout, cfg.SessionTimeout)
	}
	if cfg.Linger >= cfg.TransactionTimeout {
		bad("Linger (%v) must be well below TransactionTimeout (%v)", cfg.Linger, cfg.TransactionTimeout)
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return cfg, nil
}

// ValueDecoder turns a record value back into the payload the writer
// stored; *schema.Wire is one. decoded is false for a value it leaves as
// it is.
type ValueDecoder interface {
	Decode(ctx context.Context, value []byte) (payload []byte, decoded bool, err error)
}
