package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// RepublishConfig configures Republish: which outbox rows to repair and how
// to reach Postgres and Kafka. DatabaseURL, KafkaOpts and Since are required;
// every other field has the default its doc names. The routing fields must be
// the relay's, so a republished copy lands where the relay would have put it.
type RepublishConfig struct {
	// DatabaseURL is the Postgres URL of the database holding the outbox. Required.
	DatabaseURL string
	// Schema holds the outbox events table. Defaults to "outbox".
	Schema string
	// Slot is the relay's replication slot. Republish waits until it has
	// relayed everything committed before the republish's snapshot, so a row
	// still on its way through the stream is never published twice. A slot
	// that does not exist, or lost its WAL, streams nothing and is not waited
	// for. Defaults to "<Schema>_relay".
	Slot string
	// Since and Until bound the rows by created_at (the writing transaction's
	// start): Since <= created_at < Until. Since is required; Until defaults
	// to no bound (every row committed when the republish starts).
	Since, Until time.Time
	// AggregateTypes, when set, keeps only rows of these aggregate types.
	AggregateTypes []string
	// EventIDs, when set, keeps only these events.
	EventIDs []uuid.UUID
	// DryRun finds what is missing and publishes nothing: Summary.Missing
	// lists it. It still waits for the relay (see Slot).
	DryRun bool

	// KafkaOpts reach the cluster (seed brokers, TLS, SASL). Required.
	KafkaOpts []kgo.Opt
	// TransactionalID is the republish producer's transactional id. Every run
	// with the same id fences the one before it, which is what makes a
	// repeated or crashed run safe: keep it stable. Defaults to
	// "outbox-republish-<Schema>".
	TransactionalID string
	// CheckpointTopic receives, in every republish transaction, a progress
	// record keyed "republish:<TransactionalID>". Defaults to
	// "outbox.relay.checkpoints", the relay's.
	CheckpointTopic string
	// TopicTemplate and RecordTopicTemplate route rows with no topic, as the
	// relay does. Default "outbox.{aggregate_type}" and
	// "outbox.{aggregate_type}.records".
	TopicTemplate, RecordTopicTemplate string
	// CreateTopics creates a missing target topic. Defaults to false: a
	// missing topic is ErrUnknownTopic.
	CreateTopics bool
	// BatchEvents is how many records one Kafka transaction carries (about).
	// Defaults to 5000.
	BatchEvents int
	// KafkaMargin is how far before Since the scan of the topics starts, for
	// clock differences between the database and the relay's host. Defaults
	// to 5 minutes.
	KafkaMargin time.Duration
	// WaitTimeout bounds the wait for the relay (see Slot). Defaults to 2
	// minutes.
	WaitTimeout time.Duration
	// TransactionTimeout is the Kafka transaction timeout. Defaults to 60s.
	TransactionTimeout time.Duration
	// Progress, when set, is called after every committed transaction with
	// the records published so far and the total to publish.
	Progress func(published, total int)
	// Logger receives structured logs. Defaults to slog.Default().
	Logger *slog.Logger

	hooks repairHooks
}

// RepublishSummary says what a Republish found and did.
type RepublishSummary struct {
	// Rows is how many outbox rows the window holds; Records how many Kafka
	// copies they make (topic plus fan-out topics).
	Rows, Records int
	// InKafka is how many of those copies the topics already held.
	InKafka int
	// Published is how many copies this run produced (0 with DryRun).
	Published int
	// Transactions is how many Kafka transactions this run committed.
	Transactions int
	// Missing lists the rows with a copy missing, in event_id order (with
	// DryRun, what a real run would publish).
	Missing []MissingEvent
	// SnapshotLSN is the WAL position of the snapshot the rows were read in.
	SnapshotLSN string
	// WaitedFor is how long Republish waited for the relay to pass the snapshot.
	WaitedFor time.Duration
}

// MissingEvent is one outbox row with a Kafka copy missing.
type MissingEvent struct {
	EventID       uuid.UUID
	AggregateType string
	AggregateID   string
	CreatedAt     time.Time
	// Topics are the topics missing it.
	Topics []string
}

func (cfg RepublishConfig) withDefaults() (RepublishConfig, error) {
	if strings.TrimSpace(cfg.DatabaseURL) == "" {
		return cfg, fmt.Errorf("%w: DatabaseURL is required", errConfig)
	}
	if len(cfg.KafkaOpts) == 0 {
		return cfg, fmt.Errorf("%w: KafkaOpts is required (at least kgo.SeedBrokers)", errConfig)
	}
	if cfg.Since.IsZero() {
		return cfg, fmt.Errorf("%w: Since is required (the start of the window to repair)", errConfig)
	}
	if !cfg.Until.IsZero() && !cfg.Until.After(cfg.Since) {
		return cfg, fmt.Errorf("%w: Until (%s) must be after Since (%s)", errConfig, cfg.Until.Format(time.RFC3339), cfg.Since.Format(time.RFC3339))
	}
	if cfg.Schema == "" {
		cfg.Schema = "outbox"
	}
	if !identRE.MatchString(cfg.Schema) {
		return cfg, fmt.Errorf("%w: Schema %q must be a lower-case Postgres identifier", errConfig, cfg.Schema)
	}
	if cfg.Slot == "" {
		cfg.Slot = cfg.Schema + "_relay"
	}
	if cfg.TransactionalID == "" {
		cfg.TransactionalID = "outbox-republish-" + cfg.Schema
	}
	if cfg.CheckpointTopic == "" {
		cfg.CheckpointTopic = "outbox.relay.checkpoints"
	}
	if cfg.TopicTemplate == "" {
		cfg.TopicTemplate = "outbox.{aggregate_type}"
	}
	if cfg.RecordTopicTemplate == "" {
		cfg.RecordTopicTemplate = "outbox.{aggregate_type}.records"
	}
	if cfg.BatchEvents <= 0 {
		cfg.BatchEvents = 5000
	}
	if cfg.KafkaMargin <= 0 {
		cfg.KafkaMargin = 5 * time.Minute
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = 2 * time.Minute
	}
	if cfg.TransactionTimeout <= 0 {
		cfg.TransactionTimeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

// republishProgress is the record a republish writes to the checkpoint topic
// in each of its transactions.
type republishProgress struct {
	Since       time.Time `json:"since"`
	Until       time.Time `json:"until,omitzero"`
	SnapshotLSN string    `json:"snapshot_lsn"`
	LastEventID string    `json:"last_event_id,omitempty"`
	Published   int       `json:"published"`
	Done        bool      `json:"done"`
	At          time.Time `json:"at"`
}

// Republish repairs a gap in Kafka from the events table, exactly once: it
// reads the window's rows in one snapshot, waits until the relay's slot has
// relayed everything committed before that snapshot (so nothing of the window
// is still on its way), reads which event ids the target topics hold
// (read_committed, from the offsets of Since minus KafkaMargin), and publishes
// only the missing copies in event_id order, inside Kafka transactions of a
// producer whose transactional id fences any earlier run. Run it again after a
// crash or an unknown commit: it publishes only what is still missing.
//
// Republished records carry envelope.HeaderRepublished. A consumer may see
// them after records of events that happened later.
func Republish(ctx context.Context, cfg RepublishConfig) (RepublishSummary, error) {
	var sum RepublishSummary
	cfg, err := cfg.withDefaults()
	if err != nil {
		return sum, err
	}
	log := cfg.Logger.With(slog.String("component", "republish"))
	conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return sum, fmt.Errorf("relay: republish: connect to Postgres: %w", err)
	}
	defer closeConn(conn)
	// A second connection watches the slot while the first holds the snapshot.
	watch, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return sum, fmt.Errorf("relay: republish: connect to Postgres: %w", err)
	}
	defer closeConn(watch)

	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return sum, fmt.Errorf("relay: republish: begin snapshot: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The first statement takes the snapshot; the insert position read in it
	// is past the commit record of every transaction the snapshot sees.
	var snapText string
	if err := tx.QueryRow(ctx, "SELECT pg_catalog.pg_current_wal_insert_lsn()::text").Scan(&snapText); err != nil {
		return sum, fmt.Errorf("relay: republish: read WAL position: %w", err)
	}
	snap, err := pglogrepl.ParseLSN(snapText)
	if err != nil {
		return sum, fmt.Errorf("relay: republish: WAL position %q: %w", snapText, err)
	}
	sum.SnapshotLSN = snapText

	start := time.Now()
	if err := waitForSlot(ctx, watch, cfg.Slot, snap, cfg.WaitTimeout, log); err != nil {
		return sum, err
	}
	sum.WaitedFor = time.Since(start)

	opts := append([]kgo.Opt{}, cfg.KafkaOpts...)
	var cl *kgo.Client
	if cfg.DryRun {
		cl, err = kgo.NewClient(opts...)
	} else {
		cl, err = kgo.NewClient(append(opts,
			kgo.TransactionalID(cfg.TransactionalID),
			kgo.TransactionTimeout(cfg.TransactionTimeout),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.WithLogger(kafkaLogger{kslog.New(log.With(slog.String("component", "kafka")))}),
		)...)
	}
	if err != nil {
		return sum, fmt.Errorf("relay: republish: Kafka client: %w", err)
	}
	defer cl.Close()
	if !cfg.DryRun {
		// Fence every earlier run before reading what Kafka holds: its last
		// transaction is resolved now, and it can commit nothing after the read.
		if _, _, err := cl.ProducerID(ctx); err != nil {
			return sum, fmt.Errorf("relay: republish: initialise transactional producer %q: %w", cfg.TransactionalID, err)
		}
		if err := ensureCheckpointTopic(ctx, kadm.NewClient(cl), cfg.CheckpointTopic); err != nil {
			return sum, err
		}
	}
	rp := &repairer{
		schema: cfg.Schema,
		rt:     &router{eventTemplate: cfg.TopicTemplate, recordTemplate: cfg.RecordTopicTemplate},
		opts:   cfg.KafkaOpts,
		cl:     cl,
		log:    log,
		margin: cfg.KafkaMargin,
		batch:  cfg.BatchEvents,
		create: cfg.CreateTopics,
		now:    time.Now,
		hooks:  cfg.hooks,
	}
	w := repairWindow{since: cfg.Since, until: cfg.Until, aggregateTypes: cfg.AggregateTypes, eventIDs: cfg.EventIDs}
	plan, err := rp.plan(ctx, tx, w)
	if err != nil {
		return sum, err
	}
	sum.Rows, sum.Records, sum.InKafka = len(plan.rows), plan.records, plan.inKafka
	for _, r := range plan.missingRows() {
		me := MissingEvent{EventID: r.id, AggregateType: r.aggType, AggregateID: r.aggID, CreatedAt: r.createdAt}
		for i, t := range r.topics {
			if !r.present[i] {
				me.Topics = append(me.Topics, t)
			}
		}
		sum.Missing = append(sum.Missing, me)
	}
	log.InfoContext(ctx, "relay: republish: window read", slog.Int("rows", sum.Rows), slog.Int("records", sum.Records),
		slog.Int("in_kafka", sum.InKafka), slog.Int("missing", sum.Records-sum.InKafka), slog.String("snapshot_lsn", snapText))
	if cfg.DryRun {
		return sum, nil
	}
	total := sum.Records - sum.InKafka
	if cfg.Progress != nil {
		rp.onBatch = func(published int) { cfg.Progress(published, total) }
	}
	key := []byte("republish:" + cfg.TransactionalID)
	extra := func(last bool, lastID uuid.UUID, published int) []*kgo.Record {
		if published == 0 && !last {
			return nil
		}
		if published == 0 {
			return nil // nothing to publish: nothing to record
		}
		pr := republishProgress{Since: cfg.Since, Until: cfg.Until, SnapshotLSN: snapText, Published: published, Done: last, At: time.Now().UTC()}
		if lastID != (uuid.UUID{}) {
			pr.LastEventID = lastID.String()
		}
		b, _ := json.Marshal(pr)
		return []*kgo.Record{{Topic: cfg.CheckpointTopic, Key: key, Value: b}}
	}
	sum.Published, sum.Transactions, err = rp.publish(ctx, tx, plan, extra)
	if err != nil {
		return sum, err
	}
	log.InfoContext(ctx, "relay: republish: done", slog.Int("published", sum.Published), slog.Int("transactions", sum.Transactions))
	return sum, nil
}

// waitForSlot waits until slot has confirmed snap: the relay has then
// committed to Kafka every row the snapshot sees that its stream would
// deliver. A missing slot, or one that lost its WAL, delivers nothing.
func waitForSlot(ctx context.Context, conn *pgx.Conn, slot string, snap pglogrepl.LSN, timeout time.Duration, log *slog.Logger) error {
	deadline := time.Now().Add(timeout)
	logged := false
	// A relay between sessions (a restart, its backoff) holds no slot for a
	// moment; only a slot inactive for longer has no relay.
	const inactiveGrace = 15 * time.Second
	var inactiveSince time.Time
	for {
		var (
			active    bool
			walStatus string
			confirmed *string
		)
		err := conn.QueryRow(ctx, `SELECT coalesce(active, false), coalesce(wal_status, ''), confirmed_flush_lsn::text
			FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active, &walStatus, &confirmed)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("relay: republish: read slot %s: %w", slot, err)
		}
		if walStatus == "lost" {
			return nil
		}
		var at pglogrepl.LSN
		if confirmed != nil {
			if at, err = pglogrepl.ParseLSN(*confirmed); err != nil {
				return fmt.Errorf("relay: republish: slot %s confirmed_flush_lsn %q: %w", slot, *confirmed, err)
			}
		}
		if at >= snap {
			return nil
		}
		if active {
			inactiveSince = time.Time{}
		} else if inactiveSince.IsZero() {
			inactiveSince = time.Now()
		}
		if !active && time.Since(inactiveSince) >= min(inactiveGrace, timeout) {
			return fmt.Errorf("%w: slot %s is confirmed at %s, before the snapshot's %s, and no relay streams it: rows of the window "+
				"committed after %s would arrive twice. Start the relay (with --accept-slot-position if it stopped on a moved slot) and run "+
				"republish again, or let the relay repair the gap itself with `outbox relay --on-slot-loss=republish`",
				ErrRelayBehind, slot, at, snap, at)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: slot %s is confirmed at %s and has not reached the snapshot's %s within %s: the relay is behind; "+
				"run republish again when it has caught up (see `outbox lag`), or pass a longer --wait", ErrRelayBehind, slot, at, snap, timeout)
		}
		if !logged {
			log.InfoContext(ctx, "relay: republish: waiting for the relay to pass the snapshot", slog.String("slot", slot),
				slog.String("confirmed_lsn", at.String()), slog.String("snapshot_lsn", snap.String()))
			logged = true
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
