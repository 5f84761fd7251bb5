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
	"github.com/twmb/franz-go/pkg/kerr"
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
	// Publication is the relay's publication, decoded to find the rows still
	// in an inactive slot's stream. Defaults to "<Schema>_events".
	Publication string
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
	// "outbox-republish-<Slot>": one per relay, like the relay's own
	// "outbox-relay-<Slot>", so repairs of two outboxes sharing a Kafka
	// cluster never fence each other.
	TransactionalID string
	// CheckpointTopic receives, in every republish transaction, a progress
	// record keyed "republish:<TransactionalID>". Defaults to
	// "outbox.relay.checkpoints", the relay's.
	CheckpointTopic string
	// TopicTemplate and RecordTopicTemplate route rows with no topic, as the
	// relay does. Default "outbox.{aggregate_type}" and
	// "outbox.{aggregate_type}.records".
	TopicTemplate, RecordTopicTemplate string
	// Encoder and SchemaDeadLetterTopic encode values as the relay does
	// (Config.Encoder): give them the relay's settings, or republished
	// records differ from streamed ones.
	Encoder               ValueEncoder
	SchemaDeadLetterTopic string
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
	// Pending is how many rows of the window were still in the stream of an
	// inactive slot: the relay publishes them when it starts, so Republish
	// leaves them out.
	Pending int
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
	if cfg.Publication == "" {
		cfg.Publication = cfg.Schema + "_events"
	}
	if cfg.TransactionalID == "" {
		cfg.TransactionalID = "outbox-republish-" + cfg.Slot
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
	pending, err := waitForSlot(ctx, watch, cfg, snap, log)
	if err != nil {
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
		rt:     &router{eventTemplate: cfg.TopicTemplate, recordTemplate: cfg.RecordTopicTemplate, enc: cfg.Encoder, schemaDLT: cfg.SchemaDeadLetterTopic},
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
	for id := range pending {
		if r := plan.byID[id]; r != nil {
			sum.Pending++
			for i := range r.present {
				r.present[i] = true
			}
		}
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
		slog.Int("in_kafka", sum.InKafka), slog.Int("pending_in_slot", sum.Pending), slog.Int("missing", len(sum.Missing)), slog.String("snapshot_lsn", snapText))
	if cfg.DryRun {
		return sum, nil
	}
	total := 0
	for _, m := range sum.Missing {
		total += len(m.Topics)
	}
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
	if errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.ProducerFenced) {
		return sum, fmt.Errorf("%w (another republish with transactional id %q started and fenced this one; what this run committed stays, and a new run publishes only what is still missing)", err, cfg.TransactionalID)
	}
	if err != nil {
		return sum, err
	}
	log.InfoContext(ctx, "relay: republish: done", slog.Int("published", sum.Published), slog.Int("transactions", sum.Transactions))
	return sum, nil
}

// waitForSlot makes sure no row the snapshot sees is still on its way to
// Kafka through the relay's slot, and returns the ones that are. An active
// slot (a relay streams it) is waited for until it has confirmed snap: the
// relay has then committed every such row. An inactive one is decoded from
// its position to snap without consuming anything
// (pg_logical_slot_peek_binary_changes): the rows found there are what the
// relay will publish when it starts, and are left out. A missing slot, or
// one that lost its WAL, streams nothing.
func waitForSlot(ctx context.Context, conn *pgx.Conn, cfg RepublishConfig, snap pglogrepl.LSN, log *slog.Logger) (map[uuid.UUID]bool, error) {
	deadline := time.Now().Add(cfg.WaitTimeout)
	logged := false
	for {
		var (
			active    bool
			walStatus string
			confirmed *string
		)
		err := conn.QueryRow(ctx, `SELECT coalesce(active, false), coalesce(wal_status, ''), confirmed_flush_lsn::text
			FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&active, &walStatus, &confirmed)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("relay: republish: read slot %s: %w", cfg.Slot, err)
		}
		if walStatus == "lost" {
			return nil, nil
		}
		var at pglogrepl.LSN
		if confirmed != nil {
			if at, err = pglogrepl.ParseLSN(*confirmed); err != nil {
				return nil, fmt.Errorf("relay: republish: slot %s confirmed_flush_lsn %q: %w", cfg.Slot, *confirmed, err)
			}
		}
		if at >= snap {
			return nil, nil
		}
		if !active {
			pending, err := peekSlot(ctx, conn, cfg, snap)
			if isCode(err, "55006") {
				continue // a relay took it meanwhile: wait for that one
			}
			if err != nil {
				return nil, err
			}
			if len(pending) > 0 {
				log.InfoContext(ctx, "relay: republish: rows still in the inactive slot's stream are left to the relay", slog.String("slot", cfg.Slot),
					slog.Int("rows", len(pending)), slog.String("confirmed_lsn", at.String()), slog.String("snapshot_lsn", snap.String()))
			}
			return pending, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: slot %s is confirmed at %s and has not reached the snapshot's %s within %s: the relay is behind; "+
				"run republish again when it has caught up (see `outbox lag`), or pass a longer --wait", ErrRelayBehind, cfg.Slot, at, snap, cfg.WaitTimeout)
		}
		if !logged {
			log.InfoContext(ctx, "relay: republish: waiting for the relay to pass the snapshot", slog.String("slot", cfg.Slot),
				slog.String("confirmed_lsn", at.String()), slog.String("snapshot_lsn", snap.String()))
			logged = true
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// peekSlot decodes the inactive slot from its position up to snap and
// returns the event ids of the outbox rows in it.
func peekSlot(ctx context.Context, conn *pgx.Conn, cfg RepublishConfig, snap pglogrepl.LSN) (map[uuid.UUID]bool, error) {
	rows, err := conn.Query(ctx, `SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, NULL,
		'proto_version', '1', 'publication_names', $3, 'binary', 'true')`, cfg.Slot, snap.String(), cfg.Publication)
	if err != nil {
		return nil, fmt.Errorf("relay: republish: decode slot %s up to %s: %w", cfg.Slot, snap, err)
	}
	defer rows.Close()
	pending := map[uuid.UUID]bool{}
	idCol := map[uint32]int{} // relation id -> event_id's position; -1: not the outbox
	var cols []column
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("relay: republish: decode slot %s: %w", cfg.Slot, err)
		}
		switch {
		case len(data) > 0 && data[0] == 'I':
			var rel uint32
			rel, cols, err = parseInsert(data, cols)
			if err != nil {
				return nil, fmt.Errorf("relay: republish: decode slot %s: %w", cfg.Slot, err)
			}
			i, ok := idCol[rel]
			if !ok || i < 0 || i >= len(cols) || len(cols[i].data) != 16 {
				continue
			}
			id, _ := uuid.FromBytes(cols[i].data)
			pending[id] = true
		case len(data) > 0 && data[0] == 'R':
			msg, err := pglogrepl.Parse(data)
			if err != nil {
				return nil, fmt.Errorf("relay: republish: decode slot %s: %w", cfg.Slot, err)
			}
			rel := msg.(*pglogrepl.RelationMessage)
			c, err := newColumns(rel)
			if err != nil || rel.Namespace != cfg.Schema {
				idCol[rel.RelationID] = -1
				continue
			}
			idCol[rel.RelationID] = c.eventID
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("relay: republish: decode slot %s up to %s: %w", cfg.Slot, snap, err)
	}
	return pending, nil
}
