package relay

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Slot-loss policies for Config.OnSlotLoss.
const (
	// SlotLossStop stops the relay with ErrWALLost or ErrSlotMoved and the
	// republish command to run: an operator decides.
	SlotLossStop = "stop"
	// SlotLossRepublish makes the relay recreate the slot and repair the gap
	// from the events table itself, exactly once, before it streams.
	SlotLossRepublish = "republish"
)

// repairs reports whether this relay repairs gaps itself.
func (r *Relay) repairs() bool {
	return r.cfg.OnSlotLoss == SlotLossRepublish || !r.cfg.Since.IsZero()
}

// rebuilt is what rebuildSlot hands back to the session: a replication
// connection streaming the new slot, and the checkpoint now committed.
type rebuilt struct {
	repl *pgconn.PgConn
	sys  pglogrepl.IdentifySystemResult
	ck   checkpoint
}

// rebuildSlot repairs a gap exactly once: it drops the slot if it exists,
// creates it again on a replication connection that exports the slot's
// snapshot, publishes every row of the window that snapshot sees and Kafka
// lacks (rows the snapshot does not see are after the slot's start and come
// by the stream), commits the new checkpoint in the repair's last Kafka
// transaction, and then starts streaming on that same connection. cl is the
// session's producer, already initialised (fencing every predecessor), and
// ck the checkpoint it read (found says there was one).
//
// A crash anywhere leaves either the old checkpoint (the next session
// rebuilds again and publishes only what is still missing) or the new one,
// which matches the new slot.
func (r *Relay) rebuildSlot(ctx context.Context, admin *pgx.Conn, cl *kgo.Client, ck checkpoint, found bool, reason string) (rebuilt, error) {
	var out rebuilt
	log := r.log.With(slog.String("reason", reason))
	if err := r.dropSlot(ctx, admin); err != nil {
		return out, err
	}
	pcfg, err := pgconn.ParseConfig(r.cfg.DatabaseURL)
	if err != nil {
		return out, fmt.Errorf("%w: DatabaseURL: %v", errConfig, err)
	}
	pcfg.RuntimeParams["replication"] = "database"
	cctx, cancel := r.pgCtx(ctx)
	repl, err := pgconn.ConnectConfig(cctx, pcfg)
	if err == nil {
		out.sys, err = pglogrepl.IdentifySystem(cctx, repl)
	}
	cancel()
	if err != nil {
		if repl != nil {
			closePg(repl)
		}
		return out, fmt.Errorf("relay: replication connection: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			closePg(repl)
		}
	}()
	// Not bounded by PostgresTimeout: creating a slot waits for the
	// transactions running now to finish.
	opt := "(SNAPSHOT 'export')"
	if v, _ := strconv.Atoi(repl.ParameterStatus("server_version_num")); v >= 170000 {
		// A failover slot is synchronised to standbys (sync_replication_slots),
		// so a promotion keeps it and no gap opens.
		opt = "(SNAPSHOT 'export', FAILOVER)"
	}
	res, err := pglogrepl.ParseCreateReplicationSlot(repl.Exec(ctx, fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s",
		pgx.Identifier{r.cfg.Slot}.Sanitize(), opt)))
	if err != nil {
		return out, fmt.Errorf("relay: create replication slot %s: %w", r.cfg.Slot, err)
	}
	start, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return out, fmt.Errorf("relay: slot %s consistent point %q: %w", r.cfg.Slot, res.ConsistentPoint, err)
	}
	r.m.slotsRebuilt.Inc()

	var since time.Time
	switch {
	case found:
		since = ck.gapStart().Add(-r.cfg.RepairMargin)
	case !r.cfg.Since.IsZero():
		since = r.cfg.Since
	}
	next := checkpoint{Slot: r.cfg.Slot, SystemID: out.sys.SystemID, Timeline: out.sys.Timeline, Complete: true,
		Confirm: start, CommitTime: time.Now().UTC()}
	log.WarnContext(ctx, "relay: slot recreated; repairing the gap from the events table before streaming",
		slog.String("consistent_point", start.String()), slog.Time("since", since),
		slog.String("checkpoint_commit_lsn", ck.CommitLSN.String()), slog.String("checkpoint_system_id", ck.SystemID),
		slog.Int("checkpoint_timeline", int(ck.Timeline)))

	tx, err := admin.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return out, fmt.Errorf("relay: repair: begin snapshot: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+res.SnapshotName+"'"); err != nil {
		return out, fmt.Errorf("relay: repair: use the slot's snapshot %s: %w", res.SnapshotName, err)
	}
	rp := &repairer{schema: r.cfg.Schema, rt: r.rt, opts: r.cfg.KafkaOpts, cl: cl, log: log, margin: r.cfg.RepairMargin,
		batch: r.cfg.MaxBatchEvents, create: r.cfg.CreateTopics, now: time.Now, hooks: r.cfg.hooks.repair}
	rctx, cancelRepair := context.WithCancel(ctx)
	defer cancelRepair()
	var plan *repairPlan
	if since.IsZero() {
		plan = &repairPlan{}
	} else if plan, err = rp.plan(rctx, tx, repairWindow{since: since}); err != nil {
		return out, err
	}
	extra := func(last bool, _ uuid.UUID, _ int) []*kgo.Record {
		if !last {
			return nil
		}
		next.At = time.Now().UTC()
		return []*kgo.Record{{Topic: r.cfg.CheckpointTopic, Key: []byte(r.cfg.Slot), Value: next.marshal()}}
	}
	published, txns, err := rp.publish(rctx, tx, plan, extra)
	if err != nil {
		return out, err
	}
	_ = tx.Rollback(ctx)
	r.m.repairedEvents.Add(float64(published))
	log.WarnContext(ctx, "relay: gap repaired", slog.Int("rows_in_window", len(plan.rows)), slog.Int("already_in_kafka", plan.inKafka),
		slog.Int("republished", published), slog.Int("kafka_transactions", txns))

	sctx, cancelStart := r.pgCtx(ctx)
	defer cancelStart()
	if err := pglogrepl.StartReplication(sctx, repl, r.cfg.Slot, 0, r.replicationOptions()); err != nil {
		return out, fmt.Errorf("relay: start replication on slot %s: %w", r.cfg.Slot, err)
	}
	ok = true
	out.repl, out.ck = repl, next
	return out, nil
}

// dropSlot drops the relay's slot if it exists. A slot the relay's own
// closed connection still holds frees within moments; one held longer belongs
// to another relay, and the session ends so this one waits as a standby.
func (r *Relay) dropSlot(ctx context.Context, admin *pgx.Conn) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		qctx, cancel := r.pgCtx(ctx)
		_, err := admin.Exec(qctx, "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", r.cfg.Slot)
		cancel()
		if err == nil {
			return nil
		}
		if !isCode(err, "55006") || time.Now().After(deadline) {
			return fmt.Errorf("relay: drop replication slot %s to recreate it: %w", r.cfg.Slot, err)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// replicationOptions are the pgoutput options the relay streams with.
func (r *Relay) replicationOptions() pglogrepl.StartReplicationOptions {
	return pglogrepl.StartReplicationOptions{PluginArgs: []string{
		"proto_version '1'",
		"publication_names '" + r.cfg.Publication + "'",
		"messages 'true'",
		"binary 'true'",
	}}
}

// gapStart is the earliest created_at a row missing after this checkpoint
// can have, before the margin for long transactions: the commit time of the
// last transaction the checkpoint covers, or, for a checkpoint written before
// that was recorded, its Kafka commit time.
func (c *checkpoint) gapStart() time.Time {
	if !c.CommitTime.IsZero() && (c.At.IsZero() || c.CommitTime.Before(c.At)) {
		return c.CommitTime
	}
	return c.At
}

func closePg(c *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
