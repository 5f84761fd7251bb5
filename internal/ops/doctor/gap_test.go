package doctor_test

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/ops/doctor"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
)

// The Kafka side (relay.ReadCheckpoint) is the relay's and tested there; here
// Options.Checkpoint is a plain function returning the checkpoint a test
// chooses, and the slot and server are real.

type gapBundle struct {
	ctx  context.Context
	url  string
	conn *pgx.Conn
	// slot is unique on the server (slots are cluster-wide).
	slot     string
	systemID string
	timeline int32
}

var gapSeq atomic.Int64

func setupGap(t *testing.T) *gapBundle {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	b := &gapBundle{ctx: ctx, url: url, conn: conn, slot: fmt.Sprintf("doctor_gap_%d_%d", os.Getpid(), gapSeq.Add(1))}
	require.NoError(t, conn.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&b.systemID))
	require.NoError(t, conn.QueryRow(ctx, `SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int`).Scan(&b.timeline))
	return b
}

// createSlot creates the relay's slot and returns its confirmed position.
func (b *gapBundle) createSlot(t *testing.T) pglogrepl.LSN {
	t.Helper()
	_, err := b.conn.Exec(b.ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, b.slot)
	require.NoError(t, err)
	var s string
	require.NoError(t, b.conn.QueryRow(b.ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&s))
	lsn, err := pglogrepl.ParseLSN(s)
	require.NoError(t, err)
	return lsn
}

// migrate brings the outbox schema up, so that only the gap check can fail.
func (b *gapBundle) migrate(t *testing.T) {
	t.Helper()
	m, err := migrations.Open(b.ctx, b.url, "", nil)
	require.NoError(t, err)
	defer m.Close()
	_, err = m.Up(b.ctx)
	require.NoError(t, err)
}

// checkpoint is a checkpoint of this server confirmed at confirm.
func (b *gapBundle) checkpoint(confirm pglogrepl.LSN) doctor.SlotCheckpoint {
	return doctor.SlotCheckpoint{SystemID: b.systemID, Timeline: b.timeline, ConfirmLSN: confirm.String(),
		At: time.Date(2026, 12, 3, 8, 1, 0, 0, time.UTC), RepairSince: time.Date(2026, 12, 3, 7, 50, 0, 0, time.UTC)}
}

// run runs doctor with ck as the relay's checkpoint and returns the report
// and its gap check.
func (b *gapBundle) run(t *testing.T, url string, ck doctor.SlotCheckpoint, found bool, err error) (doctor.Report, doctor.Check) {
	t.Helper()
	var asked []string
	r, rerr := doctor.Run(b.ctx, url, doctor.Options{Slot: b.slot, Checkpoint: func(_ context.Context, slot string) (doctor.SlotCheckpoint, bool, error) {
		asked = append(asked, slot)
		return ck, found, err
	}})
	require.NoError(t, rerr)
	require.Equal(t, []string{b.slot}, asked)
	c := statusOf(r, "gap "+b.slot)
	require.NotEmpty(t, c.Status, r.String())
	return r, c
}

func TestGapNotCheckedWithoutKafka(t *testing.T) {
	t.Parallel()
	b := setupGap(t)
	r, err := doctor.Run(b.ctx, b.url, doctor.Options{})
	require.NoError(t, err)
	c := statusOf(r, "gap outbox_relay")
	require.Equal(t, doctor.Info, c.Status, r.String())
	require.Contains(t, c.Detail, "pass --brokers")
	require.Contains(t, r.String(), "[INFO] gap outbox_relay")
}

func TestGapSlotMissingWithCheckpoint(t *testing.T) {
	t.Parallel()
	b := setupGap(t)
	r, c := b.run(t, b.url, b.checkpoint(0x1000000), true, nil)
	require.Equal(t, doctor.Fail, c.Status, r.String())
	require.True(t, r.Failed())
	require.Contains(t, c.Detail, "slot "+b.slot+" is missing")
	require.Contains(t, c.Fix, "`outbox republish --database-url ... --brokers ... --schema outbox --slot "+b.slot+" --since 2026-12-03T07:50:00Z`")
	require.Contains(t, c.Fix, "--on-slot-loss=republish")
	require.Contains(t, r.String(), "fix: ")
}

func TestGapCheckpointOfAnotherSystem(t *testing.T) {
	t.Parallel()
	b := setupGap(t)
	ck := b.checkpoint(b.createSlot(t))
	ck.SystemID = "7000000000000000001"
	r, c := b.run(t, b.url, ck, true, nil)
	require.Equal(t, doctor.Fail, c.Status, r.String())
	require.Contains(t, c.Detail, "Postgres system 7000000000000000001, this server is "+b.systemID)
	require.Contains(t, c.Fix, "--since 2026-12-03T07:50:00Z")
	require.Contains(t, c.Fix, "--accept-slot-position")
}

func TestGapSlotAheadOfCheckpoint(t *testing.T) {
	t.Parallel()
	b := setupGap(t)
	at := b.createSlot(t)
	r, c := b.run(t, b.url, b.checkpoint(at-1), true, nil)
	require.Equal(t, doctor.Fail, c.Status, r.String())
	require.Contains(t, c.Detail, "confirmed at "+at.String()+", ahead of the relay's checkpoint")
	require.Contains(t, c.Fix, "outbox republish --database-url ... --brokers ... --schema outbox --slot "+b.slot+" --since 2026-12-03T07:50:00Z")
}

func TestGapTimelineDiffers(t *testing.T) {
	t.Parallel()
	b := setupGap(t)
	b.migrate(t)
	ck := b.checkpoint(b.createSlot(t))
	ck.Timeline = b.timeline + 1
	r, c := b.run(t, b.url, ck, true, nil)
	require.Equal(t, doctor.Warn, c.Status, r.String())
	require.False(t, r.Failed())
	require.Contains(t, c.Detail, fmt.Sprintf("timeline %d, this server is on timeline %d", b.timeline+1, b.timeline))
	require.Contains(t, c.Fix, "--since 2026-12-03T07:50:00Z")
}

func TestGapConsistent(t *testing.T) {
	t.Parallel()
	b := setupGap(t)
	b.migrate(t)
	at := b.createSlot(t)
	// The relay confirms to Postgres after the Kafka commit, so a checkpoint
	// ahead of the slot (a crash in between) is no gap either.
	for _, ck := range []pglogrepl.LSN{at, at + 0x100} {
		r, c := b.run(t, b.url, b.checkpoint(ck), true, nil)
		require.Equal(t, doctor.OK, c.Status, r.String())
		require.Equal(t, fmt.Sprintf("no gap: slot at %s, checkpoint at %s (system %s, timeline %d, committed at 2026-12-03T08:01:00Z)", at, ck, b.systemID, b.timeline), c.Detail)
		require.False(t, r.Failed(), r.String())
	}
}

func TestGapNoCheckpointYet(t *testing.T) {
	t.Parallel()
	b := setupGap(t)
	r, c := b.run(t, b.url, doctor.SlotCheckpoint{}, false, nil)
	require.Equal(t, doctor.OK, c.Status, r.String())
	require.Contains(t, c.Detail, "the relay has not run")
	b.createSlot(t)
	r, c = b.run(t, b.url, doctor.SlotCheckpoint{}, false, nil)
	require.Equal(t, doctor.OK, c.Status, r.String())
	require.Contains(t, c.Detail, "no checkpoint for slot "+b.slot)
}

func TestGapCheckpointUnreadable(t *testing.T) {
	t.Parallel()
	b := setupGap(t)
	r, c := b.run(t, b.url, doctor.SlotCheckpoint{}, false, errors.New("kafka: boom"))
	require.Equal(t, doctor.Fail, c.Status, r.String())
	require.Contains(t, c.Detail, "kafka: boom")
	require.Contains(t, c.Fix, "--brokers")
}

// TestGapSystemIDNotReadable: a service that restricts pg_control_system()
// leaves the system identifier uncompared, which the check says.
func TestGapSystemIDNotReadable(t *testing.T) {
	t.Parallel()
	b := setupGap(t)
	at := b.createSlot(t)
	role := "doctor_gap_role_" + strings.TrimPrefix(b.slot, "doctor_gap_")
	_, err := b.conn.Exec(b.ctx, `CREATE ROLE `+role+` LOGIN`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = b.conn.Exec(context.Background(), `DROP ROLE IF EXISTS `+role) })
	// pg_proc is per database: this revokes it in the test's database only.
	_, err = b.conn.Exec(b.ctx, `REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC`)
	require.NoError(t, err)
	u, err := neturl.Parse(b.url)
	require.NoError(t, err)
	u.User = neturl.User(role)
	r, c := b.run(t, u.String(), b.checkpoint(at), true, nil)
	require.Equal(t, doctor.Warn, c.Status, r.String())
	require.Contains(t, c.Detail, "system identifier not compared: pg_control_system(): permission denied")
	require.Contains(t, c.Fix, "pg_monitor")
}
