package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxrelay/outbox/sql"
)

// DefaultCheckpointTopic is the relay's default checkpoint topic.
const DefaultCheckpointTopic = "outbox.relay.checkpoints"

// SlotCheckpoint is what the relay last committed to Kafka for its slot, as
// Options.Checkpoint returns it.
type SlotCheckpoint struct {
	// SystemID and Timeline identify the Postgres server the relay streamed
	// (IDENTIFY_SYSTEM). An empty SystemID is not compared.
	SystemID string
	Timeline int32
	// ConfirmLSN is what the relay confirmed to Postgres after its last
	// commit to Kafka, as text (16/B374D848): a slot confirmed beyond it was
	// moved by someone else or recreated.
	ConfirmLSN string
	// At is when the checkpoint was committed to Kafka.
	At time.Time
	// RepairSince is where a repair of a gap after this checkpoint starts:
	// the --since of the printed `outbox republish`.
	RepairSince time.Time
}

// gapState is what the gap check of the relay's slot compares.
type gapState struct {
	opts Options
	slot *sql.DoctorSlotsRow // nil: the slot does not exist

	asked   bool // opts.Checkpoint was called
	ck      SlotCheckpoint
	found   bool
	readErr error

	systemID, timelineNote, systemIDNote string
	timeline                             int32
}

// readGap reads the relay's checkpoint and this server's system identifier
// and timeline. Permission errors and the like become notes in the check;
// only a failing connection is an error.
func readGap(ctx context.Context, q *sql.Queries, conn *pgx.Conn, opts Options, slot *sql.DoctorSlotsRow) (gapState, error) {
	g := gapState{opts: opts, slot: slot}
	var err error
	if g.systemID, err = q.DoctorSystemID(ctx, conn); err != nil {
		if g.systemIDNote, err = pgNote(err, "pg_control_system()"); err != nil {
			return g, fmt.Errorf("doctor: read system identifier: %w", err)
		}
	}
	if g.timeline, err = q.DoctorTimeline(ctx, conn); err != nil {
		if g.timelineNote, err = pgNote(err, "pg_walfile_name(pg_current_wal_lsn())"); err != nil {
			return g, fmt.Errorf("doctor: read timeline: %w", err)
		}
	}
	if opts.Checkpoint != nil {
		g.asked = true
		g.ck, g.found, g.readErr = opts.Checkpoint(ctx, opts.Slot)
	}
	return g, nil
}

// pgNote turns a server's refusal into a note; other errors are returned.
func pgNote(err error, what string) (string, error) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return "", err
	}
	if pgErr.Code == "42501" {
		return what + ": permission denied (it needs a superuser or, where the service restricts it, pg_monitor)", nil
	}
	return what + ": " + pgErr.Message, nil
}

// since is the --since of the printed republish command.
func (g gapState) since() string {
	if g.found && !g.ck.RepairSince.IsZero() {
		return g.ck.RepairSince.UTC().Format(time.RFC3339)
	}
	return "<the time of the last event you know reached Kafka>"
}

// check compares the relay's slot with its checkpoint.
func (g gapState) check() Check {
	o := g.opts
	c := Check{Name: "gap " + o.Slot, Status: OK}
	lost := g.slot != nil && g.slot.WalStatus == "lost"
	switch {
	case !g.asked && lost:
		c.Status, c.Detail = Fail, "slot "+o.Slot+" lost WAL it needed: rows committed since the relay's last checkpoint may never reach Kafka"
		c.Fix = lostWALFix(o, o.Slot, g.since()) + " (pass --brokers to doctor to print the --since of the relay's last checkpoint)"
		return c
	case !g.asked:
		c.Status, c.Detail = Info, "not checked: pass --brokers (with the relay's Kafka flags and --checkpoint-topic) to compare slot "+o.Slot+" with the relay's checkpoint for gaps"
		return c
	case g.readErr != nil:
		c.Status, c.Detail = Fail, "cannot read the relay's checkpoint: "+g.readErr.Error()
		c.Fix = "check --brokers and the Kafka flags (the relay's), and --checkpoint-topic (the relay's, default " + DefaultCheckpointTopic + ")"
		return c
	case !g.found && g.slot == nil:
		c.Detail = "no slot " + o.Slot + " and no checkpoint in " + o.CheckpointTopic + " yet: the relay has not run (it creates the slot at first start)"
		return c
	case !g.found && lost:
		c.Status, c.Detail = Fail, "slot "+o.Slot+" lost WAL it needed, and "+o.CheckpointTopic+" holds no checkpoint for it"
		c.Fix = lostWALFix(o, o.Slot, g.since())
		return c
	case !g.found:
		c.Detail = "no checkpoint for slot " + o.Slot + " in " + o.CheckpointTopic + " yet: the relay has committed nothing to Kafka"
		return c
	}
	ck := g.ck
	at := fmt.Sprintf("confirmed %s, system %s, timeline %d, committed at %s", ck.ConfirmLSN, ck.SystemID, ck.Timeline, ck.At.UTC().Format(time.RFC3339))
	ckConfirm, err := pglogrepl.ParseLSN(ck.ConfirmLSN)
	if err != nil {
		c.Status, c.Detail = Fail, fmt.Sprintf("the relay's checkpoint has an unreadable confirm LSN %q: %v", ck.ConfirmLSN, err)
		c.Fix = "check --checkpoint-topic: it must be the relay's"
		return c
	}
	var slotConfirm pglogrepl.LSN
	if g.slot != nil && g.slot.ConfirmedFlushLsn != "" {
		if slotConfirm, err = pglogrepl.ParseLSN(g.slot.ConfirmedFlushLsn); err != nil {
			c.Status, c.Detail = Fail, fmt.Sprintf("slot %s has an unreadable confirmed_flush_lsn %q: %v", o.Slot, g.slot.ConfirmedFlushLsn, err)
			return c
		}
	}
	switch {
	case g.slot == nil:
		c.Status = Fail
		c.Detail = fmt.Sprintf("slot %s is missing, but the relay's checkpoint exists (%s): the slot was dropped, or this server is a promoted standby the slot did not reach; rows committed since may never reach Kafka", o.Slot, at)
		c.Fix = movedFix(o, g.since())
	case lost:
		c.Status = Fail
		c.Detail = fmt.Sprintf("slot %s lost WAL it needed (wal_status lost) after the relay's checkpoint (%s): rows committed since may never reach Kafka", o.Slot, at)
		c.Fix = lostWALFix(o, o.Slot, g.since())
	case ck.SystemID != "" && g.systemID != "" && ck.SystemID != g.systemID:
		c.Status = Fail
		c.Detail = fmt.Sprintf("the relay's checkpoint was written for Postgres system %s, this server is %s (restored from a backup, or another cluster): slot %s does not continue it", ck.SystemID, g.systemID, o.Slot)
		c.Fix = movedFix(o, g.since())
	case slotConfirm > ckConfirm:
		c.Status = Fail
		c.Detail = fmt.Sprintf("slot %s is confirmed at %s, ahead of the relay's checkpoint (%s): it was recreated or advanced by someone else, and rows committed between may never reach Kafka", o.Slot, slotConfirm, at)
		c.Fix = movedFix(o, g.since())
	case g.timelineNote == "" && ck.Timeline != 0 && ck.Timeline != g.timeline:
		c.Status = Warn
		c.Detail = fmt.Sprintf("the relay's checkpoint was written on timeline %d, this server is on timeline %d: a failover since; slot %s at %s fits the checkpoint at %s", ck.Timeline, g.timeline, o.Slot, slotConfirm, ck.ConfirmLSN)
		c.Fix = fmt.Sprintf("none if the slot came through the failover intact (the relay's next checkpoint records timeline %d). Transactions the old primary committed but never sent to this server are gone from Postgres too; if events from before the failover are missing in Kafka, run `%s`", g.timeline, republishCmd(o, g.since()))
	default:
		c.Detail = fmt.Sprintf("no gap: slot at %s, checkpoint at %s (system %s, timeline %d, committed at %s)", slotConfirm, ck.ConfirmLSN, ck.SystemID, ck.Timeline, ck.At.UTC().Format(time.RFC3339))
		var notes []string
		if g.systemIDNote != "" && ck.SystemID != "" {
			notes = append(notes, "system identifier not compared: "+g.systemIDNote)
		}
		if g.timelineNote != "" && ck.Timeline != 0 {
			notes = append(notes, "timeline not compared: "+g.timelineNote)
		}
		if len(notes) > 0 {
			c.Status = Warn
			c.Detail = fmt.Sprintf("slot at %s fits the checkpoint at %s, but %s", slotConfirm, ck.ConfirmLSN, strings.Join(notes, "; "))
			c.Fix = "run doctor as a role that may read them (a superuser, or a member of pg_monitor): a checkpoint from a restored or another server would otherwise go unnoticed"
		}
	}
	return c
}

// republishCmd is the command that repairs a gap of the relay's slot.
func republishCmd(o Options, since string) string {
	cmd := fmt.Sprintf("outbox republish --database-url ... --brokers ... --schema %s --slot %s --since %s", o.Schema, o.Slot, since)
	if o.CheckpointTopic != DefaultCheckpointTopic {
		cmd += " --checkpoint-topic " + o.CheckpointTopic
	}
	return cmd
}

// relayRepairs is the alternative to a republish by hand.
const relayRepairs = "either restart the relay with --on-slot-loss=republish (`outbox relay ... --on-slot-loss=republish`), which recreates the slot and republishes the gap from the events table itself, exactly once, or "

// movedFix repairs a slot that is missing, was recreated or advanced, or
// belongs to another server than the checkpoint.
func movedFix(o Options, since string) string {
	return relayRepairs + fmt.Sprintf("start the relay with --accept-slot-position (it streams from the slot's position, creating the slot if it is missing), then run `%s`", republishCmd(o, since))
}

// lostWALFix repairs a slot whose WAL was removed; for a slot other than the
// relay's it says how to get the command.
func lostWALFix(o Options, slot, since string) string {
	drop := fmt.Sprintf("SELECT pg_drop_replication_slot('%s');", strings.ReplaceAll(slot, "'", "''"))
	if slot != o.Slot {
		return fmt.Sprintf("the slot's WAL was removed (max_slot_wal_keep_size): its consumer missed events. If it is another outbox relay's slot, `outbox doctor --schema SCHEMA --slot %s --brokers ...` prints the repair; otherwise drop and recreate it (%s) and resynchronise its consumer", slot, drop)
	}
	return "the slot's WAL was removed (max_slot_wal_keep_size): rows committed since the relay's last checkpoint never reached Kafka; " + relayRepairs +
		fmt.Sprintf("drop the slot (%s), start the relay with --accept-slot-position (it creates the slot and streams from its position), then run `%s`", drop, republishCmd(o, since))
}
