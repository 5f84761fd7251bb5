package relay

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sync/semaphore"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	sqlc "github.com/outboxrelay/outbox/sql"
)

// The stream hands decoded items to the batching loop in groups: a whole
// small Postgres transaction at once, a large one every groupItems items or
// groupBytes of payload. One hand-off per transaction instead of one per
// message is what a low steady rate pays for most (each wakes a parked
// goroutine). Up to queueItems items may wait, in however many groups:
// while a Kafka commit is in flight the stream must be able to queue the
// transactions that arrive meanwhile (hundreds of small ones), or the next
// batch holds no more than the queue and the relay falls behind a steady
// stream; and a large transaction must not queue more than a few MiB (the
// rows of one group are at most groupBytes plus one row). With the
// producer's buffer the queue bounds memory.
const (
	queueItems = 1024
	groupItems = 64
	groupBytes = 256 << 10
)

// session runs the start-up sequence of the design (take the slot, fence the
// producer, read the checkpoint) and then streams until ctx ends or something
// fails. streamed says it got as far as streaming.
func (r *Relay) session(ctx context.Context) (streamed bool, err error) {
	q := sqlc.New()
	cctx, cancelConnect := r.pgCtx(ctx)
	admin, err := pgx.Connect(cctx, r.cfg.DatabaseURL)
	cancelConnect()
	if err != nil {
		return false, fmt.Errorf("relay: connect to Postgres: %w", err)
	}
	adminOwned := true
	defer func() {
		if adminOwned {
			closeConn(admin)
		}
	}()
	if err := r.preflight(ctx, q, admin); err != nil {
		return false, err
	}

	// 1. Take the slot: START_REPLICATION succeeds only once no other
	// connection holds it. A relay that repairs gaps and finds the slot
	// missing or without its WAL recreates it instead (rebuildSlot): nobody
	// streams a slot in that state, so fencing first harms no healthy relay.
	var (
		repl          *pgconn.PgConn
		sys           pglogrepl.IdentifySystemResult
		slotConfirmed pglogrepl.LSN
		rebuild       string
	)
	if r.repairs() {
		qctx, cancelQuery := r.pgCtx(ctx)
		slot, err := q.RelaySlot(qctx, admin, r.cfg.Slot)
		cancelQuery()
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			rebuild = "the slot does not exist"
		case err != nil:
			return false, fmt.Errorf("relay: read slot %s: %w", r.cfg.Slot, err)
		case slot.WalStatus == "lost":
			rebuild = "the slot lost WAL it needed (wal_status lost)"
		}
	}
	if rebuild == "" {
		var err error
		if repl, sys, err = r.takeSlot(ctx, q, admin); err != nil {
			return false, err
		}
		qctx, cancelQuery := r.pgCtx(ctx)
		slot, err := q.RelaySlot(qctx, admin, r.cfg.Slot)
		cancelQuery()
		if err != nil {
			closePg(repl)
			return false, fmt.Errorf("relay: read slot %s: %w", r.cfg.Slot, err)
		}
		if slot.ConfirmedFlushLsn != "" {
			if slotConfirmed, err = pglogrepl.ParseLSN(slot.ConfirmedFlushLsn); err != nil {
				closePg(repl)
				return false, fmt.Errorf("relay: slot %s confirmed_flush_lsn: %w", r.cfg.Slot, err)
			}
		}
	}
	defer func() {
		if repl != nil {
			closePg(repl)
		}
	}()

	// 2. Initialise the transactional producer: this fences a zombie
	// predecessor and resolves its last transaction.
	opts := append([]kgo.Opt{
		kgo.MaxBufferedBytes(4 << 20),
		kgo.MaxBufferedRecords(4096),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}, r.cfg.KafkaOpts...)
	opts = append(opts,
		kgo.TransactionalID(r.cfg.TransactionalID),
		kgo.TransactionTimeout(r.cfg.TransactionTimeout),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.WithLogger(kafkaLogger{kslog.New(r.log.With(slog.String("component", "kafka")))}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return false, fmt.Errorf("relay: Kafka producer: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	kctx, cancel := context.WithTimeout(ctx, r.cfg.TransactionTimeout)
	defer cancel()
	if err := ensureCheckpointTopic(kctx, adm, r.cfg.CheckpointTopic); err != nil {
		return false, err
	}
	if _, _, err := cl.ProducerID(kctx); err != nil {
		return false, fmt.Errorf("relay: initialise transactional producer %q: %w", r.cfg.TransactionalID, err)
	}

	// 3. Read the checkpoint read_committed to the end of the topic.
	ck, found, err := readCheckpoint(kctx, r.cfg.KafkaOpts, adm, r.cfg.CheckpointTopic, r.cfg.Slot)
	if err != nil {
		return false, err
	}
	if rebuild == "" {
		switch {
		case found:
			var (
				tlEnd pglogrepl.LSN
				tlErr error
			)
			if ck.SystemID == sys.SystemID && ck.Timeline != 0 && ck.Timeline != sys.Timeline {
				tlEnd, tlErr = r.timelineEnd(ctx, ck.Timeline, sys.Timeline)
			}
			err := r.checkPosition(&ck, slotConfirmed, sys, tlEnd, tlErr)
			if errors.Is(err, ErrSlotMoved) && r.cfg.OnSlotLoss == SlotLossRepublish {
				rebuild = strings.TrimPrefix(err.Error(), ErrSlotMoved.Error()+": ")
			} else if err != nil {
				return false, err
			}
		case !r.cfg.Since.IsZero():
			// A first start asked to publish what came before the slot: the
			// slot is made again so its snapshot splits the rows exactly.
			rebuild = "first start with --since"
		}
		if rebuild != "" {
			closePg(repl)
			repl = nil
		}
	}
	if rebuild != "" {
		if found && !r.cfg.Since.IsZero() && r.cfg.OnSlotLoss != SlotLossRepublish {
			// --since alone repairs only a first start; a checkpoint means
			// this is not one, and the slot's trouble needs an operator.
			return false, r.slotLossError(ck, found, ErrSlotMoved, rebuild)
		}
		rb, err := r.rebuildSlot(ctx, admin, cl, ck, found, rebuild)
		if err != nil {
			return false, err
		}
		repl, sys, ck, found = rb.repl, rb.sys, rb.ck, true
		slotConfirmed = ck.Confirm
	} else if !found {
		ck = checkpoint{}
	}
	if found && !r.cfg.Since.IsZero() && rebuild == "" {
		r.log.InfoContext(ctx, "relay: a checkpoint exists, so --since is ignored: this is not a first start", slog.Time("since", r.cfg.Since))
	}
	ck.Slot, ck.SystemID, ck.Timeline = r.cfg.Slot, sys.SystemID, sys.Timeline
	// The stream starts at the slot's position, which checkPosition accepted:
	// everything before it is in Kafka (or was accepted as skipped), so it is
	// the floor of what the next checkpoint may say is confirmed.
	ck.Confirm = max(ck.Confirm, slotConfirmed)

	// 4. Stream, skipping every transaction at or below the checkpoint.
	items := make(chan []item, queueItems)
	room := semaphore.NewWeighted(queueItems)
	st := &stream{conn: repl, out: items, room: room, schema: r.cfg.Schema, rt: r.rt, interval: r.cfg.StatusInterval, timeout: r.cfg.PostgresTimeout, log: r.log, m: r.m}
	st.confirm(ck.Confirm)

	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs <- st.run(sctx)
	}()
	adminOwned = false
	go func() {
		defer wg.Done()
		defer closeConn(admin)
		errs <- r.heartbeat(sctx, admin)
	}()
	defer func() {
		stop()
		wg.Wait()
	}()

	r.active.Store(true)
	r.m.active.Set(1)
	r.log.InfoContext(ctx, "relay: streaming",
		slog.String("publication", r.cfg.Publication),
		slog.String("slot_confirmed_lsn", slotConfirmed.String()),
		slog.String("checkpoint_commit_lsn", ck.CommitLSN.String()),
		slog.Int64("checkpoint_rows", ck.Rows),
		slog.Bool("checkpoint_complete", ck.Complete))

	p := &pump{r: r, cl: cl, st: st, items: items, room: room, done: ck, next: ck}
	err = p.loop(ctx, errs, stop)
	return true, err
}

// pgCtx bounds one exchange with Postgres by PostgresTimeout: over a
// half-open connection (a dead path, a frozen server) nothing else ends it,
// and the session must fail and start again instead of stalling.
func (r *Relay) pgCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.PostgresTimeout)
}

// preflight checks wal_level and creates (or demands) the publication and slot.
func (r *Relay) preflight(ctx context.Context, q *sqlc.Queries, admin *pgx.Conn) error {
	qctx, cancel := r.pgCtx(ctx)
	defer cancel()
	lvl, err := q.RelayWALLevel(qctx, admin)
	if err != nil {
		return fmt.Errorf("relay: read wal_level: %w", err)
	}
	if lvl != "logical" {
		return fmt.Errorf("%w (it is %q)", ErrWALLevel, lvl)
	}
	exists, err := q.RelayPublicationExists(qctx, admin, r.cfg.Publication)
	if err != nil {
		return fmt.Errorf("relay: look up publication %s: %w", r.cfg.Publication, err)
	}
	if !exists {
		if r.cfg.NoCreate {
			return fmt.Errorf("%w: %s (run `outbox migrate up`, or let the relay create it)", ErrNoPublication, r.cfg.Publication)
		}
		// Identifiers cannot be query parameters; both are quoted by pgx.
		stmt := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert', publish_via_partition_root = true)",
			pgx.Identifier{r.cfg.Publication}.Sanitize(), pgx.Identifier{r.cfg.Schema, "events"}.Sanitize())
		if _, err := admin.Exec(qctx, stmt); err != nil && !isCode(err, "42710") {
			return fmt.Errorf("relay: create publication %s: %w", r.cfg.Publication, err)
		}
		r.log.InfoContext(ctx, "relay: created publication", slog.String("publication", r.cfg.Publication))
	}
	slot, err := q.RelaySlot(qctx, admin, r.cfg.Slot)
	if errors.Is(err, pgx.ErrNoRows) && r.repairs() && !r.cfg.NoCreate {
		return nil // the session recreates it with its snapshot (rebuildSlot)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		if r.cfg.NoCreate {
			return fmt.Errorf("%w: %s", ErrNoSlot, r.cfg.Slot)
		}
		// Not bounded by PostgresTimeout: creating a slot waits for the
		// transactions running now to finish, however long they take.
		lsn, cerr := q.RelayCreateSlot(ctx, admin, r.cfg.Slot)
		if cerr != nil && !isCode(cerr, "42710") {
			return fmt.Errorf("relay: create replication slot %s: %w", r.cfg.Slot, cerr)
		}
		r.log.InfoContext(ctx, "relay: created replication slot", slog.String("consistent_point", lsn))
		rctx, cancelRead := r.pgCtx(ctx) // qctx may have run out while the slot was created
		defer cancelRead()
		slot, err = q.RelaySlot(rctx, admin, r.cfg.Slot)
	}
	if err != nil {
		return fmt.Errorf("relay: read replication slot %s: %w", r.cfg.Slot, err)
	}
	if slot.Plugin != "pgoutput" || slot.Database != admin.Config().Database {
		return fmt.Errorf("%w: %s uses plugin %q on database %q", ErrBadSlot, r.cfg.Slot, slot.Plugin, slot.Database)
	}
	if slot.WalStatus == "lost" && !r.repairs() {
		return r.walLost()
	}
	return nil
}

func (r *Relay) walLost() error {
	ck, found := r.peekCheckpoint()
	return r.slotLossError(ck, found, ErrWALLost, "Postgres removed WAL the relay had not yet relayed (max_slot_wal_keep_size)")
}

// peekCheckpoint reads the slot's checkpoint without fencing anyone, for an
// error message; it returns found=false when Kafka does not answer in time.
func (r *Relay) peekCheckpoint() (checkpoint, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(r.cfg.KafkaOpts...)
	if err != nil {
		return checkpoint{}, false
	}
	defer cl.Close()
	ck, found, err := readCheckpoint(ctx, r.cfg.KafkaOpts, kadm.NewClient(cl), r.cfg.CheckpointTopic, r.cfg.Slot)
	return ck, found && err == nil
}

// slotLossError says what is wrong with the slot and gives the commands that
// repair the gap exactly once.
func (r *Relay) slotLossError(ck checkpoint, found bool, sentinel error, problem string) error {
	since := "<the time of the last event you know reached Kafka>"
	if found {
		since = ck.gapStart().Add(-r.cfg.RepairMargin).UTC().Format(time.RFC3339)
	}
	republish := fmt.Sprintf("outbox republish --database-url ... --brokers ... --schema %s --slot %s --since %s", r.cfg.Schema, r.cfg.Slot, since)
	var steps string
	if errors.Is(sentinel, ErrWALLost) {
		steps = fmt.Sprintf("drop the slot (SELECT pg_drop_replication_slot('%s')), start the relay again with --accept-slot-position (it creates the slot and streams from it), then run `%s`", r.cfg.Slot, republish)
	} else {
		steps = fmt.Sprintf("start the relay with --accept-slot-position (it streams from the slot's position), then run `%s`", republish)
	}
	return fmt.Errorf("%w: slot %s: %s. To repair the gap exactly once, either run the relay with --on-slot-loss=republish, which does it "+
		"itself, or %s", sentinel, r.cfg.Slot, problem, steps)
}

// takeSlot starts replication on the slot, waiting as a hot standby while
// another connection holds it (unless NoStandby).
func (r *Relay) takeSlot(ctx context.Context, q *sqlc.Queries, admin *pgx.Conn) (*pgconn.PgConn, pglogrepl.IdentifySystemResult, error) {
	waiting := false
	for {
		qctx, cancel := r.pgCtx(ctx)
		slot, err := q.RelaySlot(qctx, admin, r.cfg.Slot)
		cancel()
		if err != nil {
			return nil, pglogrepl.IdentifySystemResult{}, fmt.Errorf("relay: read replication slot %s: %w", r.cfg.Slot, err)
		}
		if slot.WalStatus == "lost" {
			return nil, pglogrepl.IdentifySystemResult{}, r.walLost()
		}
		if !slot.Active {
			conn, sys, err := r.startReplication(ctx)
			if err == nil {
				if waiting {
					r.log.InfoContext(ctx, "relay: took over the slot")
				}
				return conn, sys, nil
			}
			if !isCode(err, "55006") {
				return nil, sys, err
			}
		}
		if r.cfg.NoStandby {
			return nil, pglogrepl.IdentifySystemResult{}, fmt.Errorf("%w: %s", ErrSlotInUse, r.cfg.Slot)
		}
		if !waiting {
			r.log.InfoContext(ctx, "relay: slot held by another relay; waiting as a hot standby")
			waiting = true
		}
		t := time.NewTimer(r.cfg.StandbyPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, pglogrepl.IdentifySystemResult{}, ctx.Err()
		case <-t.C:
		}
	}
}

// startReplication opens a replication connection and starts streaming the
// publication from the slot's confirmed position.
func (r *Relay) startReplication(ctx context.Context) (*pgconn.PgConn, pglogrepl.IdentifySystemResult, error) {
	var sys pglogrepl.IdentifySystemResult
	pcfg, err := pgconn.ParseConfig(r.cfg.DatabaseURL)
	if err != nil {
		return nil, sys, fmt.Errorf("%w: DatabaseURL: %v", errConfig, err)
	}
	pcfg.RuntimeParams["replication"] = "database"
	// Connecting, IDENTIFY_SYSTEM and START_REPLICATION are quick on a live
	// server; the bound keeps a half-open connection from stalling the session.
	ctx, cancel := r.pgCtx(ctx)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, sys, fmt.Errorf("relay: replication connection: %w", err)
	}
	sys, err = pglogrepl.IdentifySystem(ctx, conn)
	if err == nil {
		err = pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, 0, r.replicationOptions())
	}
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = conn.Close(closeCtx)
		cancel()
		return nil, sys, fmt.Errorf("relay: start replication on slot %s: %w", r.cfg.Slot, err)
	}
	return conn, sys, nil
}

// checkPosition compares the slot with the checkpoint. The relay confirms to
// Postgres only LSNs it has checkpointed, so a slot confirmed beyond the
// checkpoint was moved by someone else or recreated, and a checkpoint from
// another server does not describe this slot.
//
// A checkpoint from an earlier timeline (the server was promoted) holds only
// while it is at or before the point where that timeline ended here: WAL past
// it existed on the old primary alone, and its LSNs mean other transactions
// on this timeline. tlEnd is that point (0: same timeline, or unknown).
func (r *Relay) checkPosition(ck *checkpoint, slotConfirmed pglogrepl.LSN, sys pglogrepl.IdentifySystemResult, tlEnd pglogrepl.LSN, tlErr error) error {
	var problem string
	otherSystem := ck.SystemID != "" && ck.SystemID != sys.SystemID
	otherTimeline := !otherSystem && ck.Timeline != 0 && ck.Timeline != sys.Timeline
	switch {
	case otherSystem:
		problem = fmt.Sprintf("the checkpoint was written for Postgres system %s, this server is %s", ck.SystemID, sys.SystemID)
	case otherTimeline && tlErr != nil:
		problem = fmt.Sprintf("the checkpoint was written on timeline %d, this server is on %d, and where timeline %d ended here is unknown (%v)", ck.Timeline, sys.Timeline, ck.Timeline, tlErr)
	case otherTimeline && ck.Confirm > tlEnd:
		problem = fmt.Sprintf("the checkpoint (timeline %d, confirmed %s) is past %s, where timeline %d ended on this server (promoted to %d): the WAL after that was on the old primary only",
			ck.Timeline, ck.Confirm, tlEnd, ck.Timeline, sys.Timeline)
	case slotConfirmed > ck.Confirm:
		problem = fmt.Sprintf("the slot is confirmed at %s, ahead of the checkpoint's %s: it was recreated or advanced by someone else, and events between may never reach Kafka", slotConfirmed, ck.Confirm)
	default:
		return nil
	}
	if !r.cfg.AcceptSlotPosition {
		if r.cfg.OnSlotLoss == SlotLossRepublish {
			return fmt.Errorf("%w: %s", ErrSlotMoved, problem)
		}
		return r.slotLossError(*ck, true, ErrSlotMoved, problem)
	}
	r.log.Warn("relay: continuing from the slot's position although it does not match the checkpoint", slog.String("problem", problem))
	if otherSystem {
		*ck = checkpoint{}
	}
	return nil
}

// timelineEnd returns where timeline old ended in the history of timeline
// cur (TIMELINE_HISTORY on a replication connection of its own: the session's
// is streaming).
func (r *Relay) timelineEnd(ctx context.Context, old, cur int32) (pglogrepl.LSN, error) {
	pcfg, err := pgconn.ParseConfig(r.cfg.DatabaseURL)
	if err != nil {
		return 0, err
	}
	pcfg.RuntimeParams["replication"] = "database"
	ctx, cancel := r.pgCtx(ctx)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return 0, err
	}
	defer closePg(conn)
	h, err := pglogrepl.TimelineHistory(ctx, conn, cur)
	if err != nil {
		return 0, err
	}
	return timelineSwitch(h.Content, old)
}

// timelineSwitch finds, in a timeline history file ("1\t0/3000060\treason"
// per line), where timeline tli ended.
func timelineSwitch(history []byte, tli int32) (pglogrepl.LSN, error) {
	for _, line := range strings.Split(string(history), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != strconv.Itoa(int(tli)) {
			continue
		}
		return pglogrepl.ParseLSN(f[1])
	}
	return 0, fmt.Errorf("timeline %d is not in this server's history", tli)
}

// kafkaLogger passes franz-go's warnings and errors to the relay's logger,
// and everything else only when that logger is at debug level: franz-go
// logs every transaction at info, which cost the relay a sixth of its CPU at
// 1,000 transactions a second.
type kafkaLogger struct{ *kslog.Logger }

// Level is for the kgo.Logger interface.
func (l kafkaLogger) Level() kgo.LogLevel {
	if lv := l.Logger.Level(); lv == kgo.LogLevelDebug {
		return lv
	}
	return min(l.Logger.Level(), kgo.LogLevelWarn)
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
