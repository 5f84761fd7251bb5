package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
)

// Config configures a Relay. DatabaseURL and KafkaOpts are required; every
// other field has the default its doc names.
type Config struct {
	// DatabaseURL is the Postgres URL of the database holding the outbox. The
	// relay adds replication=database for its streaming connection. Required.
	DatabaseURL string
	// Schema holds the outbox events table. Defaults to "outbox".
	Schema string
	// Publication streamed from the slot. Defaults to "<Schema>_events", the
	// publication the migrations create.
	Publication string
	// Slot is the logical replication slot's name. Defaults to "<Schema>_relay".
	Slot string
	// NoCreate makes Run fail with ErrNoSlot or ErrNoPublication instead of
	// creating a missing slot or publication. Defaults to false: create them.
	NoCreate bool
	// NoStandby makes Run fail with ErrSlotInUse when another connection holds
	// the slot. Defaults to false: wait as a hot standby and take over when the
	// slot frees.
	NoStandby bool
	// AcceptSlotPosition continues when the slot's position does not match the
	// Kafka checkpoint (see ErrSlotMoved), relaying from wherever the slot is.
	// Defaults to false: stop with ErrSlotMoved.
	AcceptSlotPosition bool
	// OnSlotLoss says what the relay does when the slot cannot continue from
	// the Kafka checkpoint: its WAL was removed (wal_status lost), it is
	// missing or was recreated (a Postgres failover loses logical slots before
	// Postgres 17), or the checkpoint is from another server. SlotLossStop
	// (the default, "" too) stops with ErrWALLost or ErrSlotMoved and the
	// command to repair the gap; SlotLossRepublish recreates the slot and
	// repairs the gap from the events table exactly once, then streams.
	OnSlotLoss string
	// Since, on a first start (no checkpoint in Kafka yet), publishes the
	// rows created since then that the slot cannot stream because they were
	// committed before it existed. The slot is created (or recreated) for
	// the purpose. Ignored once a checkpoint exists. Defaults to zero: no
	// rows from before the slot.
	Since time.Time
	// RepairMargin widens a repair's window back from the checkpoint's last
	// commit time, for transactions that began before it and committed after
	// (created_at is a transaction's start), and the scan of the topics for
	// clock differences. Defaults to 10 minutes.
	RepairMargin time.Duration

	// KafkaOpts reach the cluster (seed brokers, TLS, SASL) and may tune the
	// client. The relay adds the transactional id, acks=all and its logger.
	// Required.
	KafkaOpts []kgo.Opt
	// TransactionalID is the Kafka transactional id; it must be stable per slot
	// so a successor fences a zombie. Defaults to "outbox-relay-<Slot>".
	TransactionalID string
	// TransactionTimeout is the Kafka transaction timeout. Defaults to 60s.
	TransactionTimeout time.Duration
	// CheckpointTopic is the compacted topic holding one checkpoint per slot.
	// Create it with cleanup.policy=compact. Defaults to "outbox.relay.checkpoints".
	CheckpointTopic string
	// TopicTemplate routes an event row whose topic column is empty.
	// {aggregate_type} (made topic-safe), {event_type} and {kind} are replaced.
	// Defaults to "outbox.{aggregate_type}" (envelope.DefaultTopic).
	TopicTemplate string
	// CreateTopics creates a routed topic the first time the relay produces to
	// it, when it is missing: compacted (cleanup.policy=compact) for records,
	// delete retention for events, with the broker's default partitions.
	// Defaults to false: topics come from `outbox topics apply`.
	CreateTopics bool
	// RecordTopicTemplate routes a record row (kind 'record', a compacted topic)
	// whose topic column is empty. Defaults to "outbox.{aggregate_type}.records".
	RecordTopicTemplate string
	// Encoder turns each event's payload into the record value: a
	// *schema.Wire writes the Confluent wire format (magic byte, schema id,
	// Avro datum or JSON) for the event types it has schemas for, so Java
	// consumers read them with KafkaAvroDeserializer. Defaults to nil: the
	// payload as written. A claim-checked event's reference is never encoded.
	Encoder ValueEncoder
	// SchemaDeadLetterTopic receives, as written and with the header
	// outbox.schema-error saying why, an event whose payload the Encoder
	// refuses as not matching its schema (a row from the SQL path, which
	// the Go writer's validation does not guard), in the same Kafka
	// transaction as its neighbours. Defaults to "": the relay stops with
	// ErrSchemaMismatch naming the event, which stays in the slot.
	SchemaDeadLetterTopic string

	// MaxBatchEvents closes a batch of whole Postgres transactions once it
	// holds this many events. Defaults to 5000.
	MaxBatchEvents int
	// MaxBatchBytes closes a batch once its payloads reach this size.
	// Defaults to 4 MiB.
	MaxBatchBytes int
	// MaxLatency is the adaptive batching's budget: how long the first event
	// of an open Kafka transaction may wait for more Postgres transactions
	// before the relay commits. The relay waits only while more are expected
	// soon (the gaps between recent commits, from their WAL commit times, are
	// short against what is left of the budget), so an idle stream commits
	// each transaction at once and a busy one commits a few times per budget;
	// while a commit is in flight the next transactions queue and go into the
	// next batch anyway. Defaults to 5ms; negative: never wait, commit as soon
	// as the stream has nothing queued (one Kafka transaction per Postgres
	// transaction at low rates).
	MaxLatency time.Duration
	// Linger, when positive, replaces the adaptive wait with a fixed one: an
	// open batch waits this long from its first event whenever the stream
	// has nothing queued. Defaults to 0: adaptive (MaxLatency).
	Linger time.Duration
	// SplitEvents splits a single Postgres transaction across Kafka transactions
	// every this many events (checkpointing the position inside it). Defaults
	// to 50000.
	SplitEvents int
	// SplitBytes splits a single Postgres transaction across Kafka transactions
	// every this many payload bytes. Defaults to 32 MiB.
	SplitBytes int

	// HeartbeatInterval is how often the relay emits a heartbeat message with
	// pg_logical_emit_message, and refreshes the slot metrics. Defaults to 10s.
	HeartbeatInterval time.Duration
	// StatusInterval is how often a standby status update goes to Postgres
	// even when nothing new was confirmed. Defaults to 5s.
	StatusInterval time.Duration
	// PostgresTimeout is how long the relay waits for Postgres to answer
	// before it drops the connections and starts again from the slot: to
	// connect, for each start-up query and for the replication stream, which
	// may stay silent no longer. While the stream is quiet every status update
	// asks the walsender for an immediate reply, so a live server answers well
	// within it; without the bound a half-open connection (a dead network path,
	// a frozen server: nothing that reports an error) would stall the relay
	// forever. Creating the slot is not bounded: it waits for the transactions
	// running at the time. Keep it longer than StatusInterval and not below the
	// server's wal_sender_timeout (a walsender decoding a large transaction the
	// publication filters out reads replies only every half of that).
	// Defaults to 60s, Postgres's default wal_sender_timeout, or three
	// StatusIntervals if that is longer.
	PostgresTimeout time.Duration
	// StandbyPollInterval is how often a standby relay checks whether the slot
	// is free. Defaults to 1s.
	StandbyPollInterval time.Duration
	// RetryBackoff is the first wait before a new session after an error; it
	// doubles up to 30s and resets after a session that streamed. Defaults to 1s.
	RetryBackoff time.Duration
	// ShutdownTimeout bounds the final Kafka commit and confirm when Run's
	// context ends. Defaults to 10s.
	ShutdownTimeout time.Duration

	// Logger receives structured logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the relay's Prometheus metrics. Defaults to nil: no
	// metrics are registered.
	Registerer prometheus.Registerer

	// hooks are test-only injection points (export_test.go).
	hooks hooks
}

// hooks let crash tests stop the process at chosen points.
type hooks struct {
	// afterKafkaCommit runs after a Kafka commit and before its LSN is confirmed.
	afterKafkaCommit func()
	// repair holds the hooks of a gap repair.
	repair repairHooks
}

// errConfig marks a configuration error from New.
var errConfig = errors.New("relay: invalid config")

// DefaultMaxLatency is Config.MaxLatency's default: a few Kafka commit round
// trips, short against the p50 a consumer notices, long enough that at
// thousands of events per second a Kafka transaction carries tens of them.
const DefaultMaxLatency = 5 * time.Millisecond

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// withDefaults returns cfg with defaults filled in, or an error naming the
// first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	if strings.TrimSpace(cfg.DatabaseURL) == "" {
		return cfg, fmt.Errorf("%w: DatabaseURL is required", errConfig)
	}
	if len(cfg.KafkaOpts) == 0 {
		return cfg, fmt.Errorf("%w: KafkaOpts is required (at least kgo.SeedBrokers)", errConfig)
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	defDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.Schema, "outbox")
	def(&cfg.Publication, cfg.Schema+"_events")
	def(&cfg.Slot, cfg.Schema+"_relay")
	def(&cfg.TransactionalID, "outbox-relay-"+cfg.Slot)
	def(&cfg.CheckpointTopic, "outbox.relay.checkpoints")
	def(&cfg.TopicTemplate, "outbox.{aggregate_type}")
	def(&cfg.RecordTopicTemplate, "outbox.{aggregate_type}.records")
	defInt(&cfg.MaxBatchEvents, 5000)
	defInt(&cfg.MaxBatchBytes, 4<<20)
	defInt(&cfg.SplitEvents, 50000)
	defInt(&cfg.SplitBytes, 32<<20)
	defDur(&cfg.TransactionTimeout, 60*time.Second)
	defDur(&cfg.HeartbeatInterval, 10*time.Second)
	defDur(&cfg.StatusInterval, 5*time.Second)
	defDur(&cfg.PostgresTimeout, max(60*time.Second, 3*cfg.StatusInterval))
	defDur(&cfg.StandbyPollInterval, time.Second)
	defDur(&cfg.RetryBackoff, time.Second)
	defDur(&cfg.ShutdownTimeout, 10*time.Second)
	defDur(&cfg.RepairMargin, 10*time.Minute)
	defDur(&cfg.MaxLatency, DefaultMaxLatency)
	switch cfg.OnSlotLoss {
	case "":
		cfg.OnSlotLoss = SlotLossStop
	case SlotLossStop, SlotLossRepublish:
	default:
		return cfg, fmt.Errorf("%w: OnSlotLoss %q: want %q or %q", errConfig, cfg.OnSlotLoss, SlotLossStop, SlotLossRepublish)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for name, v := range map[string]string{"Schema": cfg.Schema, "Publication": cfg.Publication, "Slot": cfg.Slot} {
		if !identRE.MatchString(v) {
			return cfg, fmt.Errorf("%w: %s %q must be a lower-case Postgres identifier ([a-z_][a-z0-9_]*, at most 63 bytes)", errConfig, name, v)
		}
	}
	if err := envelope.ValidTopic(cfg.CheckpointTopic); err != nil {
		return cfg, fmt.Errorf("%w: CheckpointTopic: %v", errConfig, err)
	}
	if cfg.SchemaDeadLetterTopic != "" {
		if err := envelope.ValidTopic(cfg.SchemaDeadLetterTopic); err != nil {
			return cfg, fmt.Errorf("%w: SchemaDeadLetterTopic: %v", errConfig, err)
		}
	}
	for name, v := range map[string]string{"TopicTemplate": cfg.TopicTemplate, "RecordTopicTemplate": cfg.RecordTopicTemplate} {
		if err := envelope.ValidTopic(expandTemplate(v, "x", "x", "event")); err != nil {
			return cfg, fmt.Errorf("%w: %s %q: %v", errConfig, name, v, err)
		}
	}
	for name, v := range map[string]int{"MaxBatchEvents": cfg.MaxBatchEvents, "MaxBatchBytes": cfg.MaxBatchBytes, "SplitEvents": cfg.SplitEvents, "SplitBytes": cfg.SplitBytes} {
		if v < 0 {
			return cfg, fmt.Errorf("%w: %s is negative", errConfig, name)
		}
	}
	if cfg.SplitEvents < cfg.MaxBatchEvents {
		return cfg, fmt.Errorf("%w: SplitEvents (%d) must be at least MaxBatchEvents (%d)", errConfig, cfg.SplitEvents, cfg.MaxBatchEvents)
	}
	for name, d := range map[string]time.Duration{"Linger": cfg.Linger, "TransactionTimeout": cfg.TransactionTimeout, "HeartbeatInterval": cfg.HeartbeatInterval,
		"StatusInterval": cfg.StatusInterval, "PostgresTimeout": cfg.PostgresTimeout, "StandbyPollInterval": cfg.StandbyPollInterval, "RetryBackoff": cfg.RetryBackoff, "ShutdownTimeout": cfg.ShutdownTimeout} {
		if d < 0 {
			return cfg, fmt.Errorf("%w: %s is negative", errConfig, name)
		}
	}
	if cfg.PostgresTimeout <= cfg.StatusInterval {
		// The status updates are the stream's pings: with none inside the
		// timeout a quiet, healthy walsender would look dead.
		return cfg, fmt.Errorf("%w: PostgresTimeout (%s) must be longer than StatusInterval (%s)", errConfig, cfg.PostgresTimeout, cfg.StatusInterval)
	}
	return cfg, nil
}
