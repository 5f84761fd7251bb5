package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/relay"
)

// runOnce runs a relay with cfg and returns Run's error, failing the test if
// Run does not return within timeout.
func runOnce(t *testing.T, cfg relay.Config, timeout time.Duration) error {
	t.Helper()
	r, err := relay.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = r.Run(ctx)
	require.NotErrorIs(t, err, context.DeadlineExceeded, "Run did not return within %s", timeout)
	return err
}

// TestSlotHeldByAnotherRelay: with NoStandby a second relay on an active slot
// fails with ErrSlotInUse instead of waiting.
func TestSlotHeldByAnotherRelay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	runRelay(t, b.config(t))
	b.waitActive(t, 0)
	cfg := b.config(t)
	cfg.NoStandby = true
	err := runOnce(t, cfg, 30*time.Second)
	require.ErrorIs(t, err, relay.ErrSlotInUse)

	// Without NoStandby it waits (is not ready) until its context ends.
	r, err := relay.New(b.config(t))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.ErrorIs(t, r.Run(ctx), context.DeadlineExceeded)
	require.Error(t, r.Ready())
}

// TestMissingPublicationAndSlot: NoCreate refuses to create what is missing;
// without it the relay creates both and streams.
func TestMissingPublicationAndSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.conn.Exec(ctx, `DROP PUBLICATION outbox_events`)
	require.NoError(t, err)
	cfg := b.config(t)
	cfg.NoCreate = true
	require.ErrorIs(t, runOnce(t, cfg, 30*time.Second), relay.ErrNoPublication)

	_, err = b.conn.Exec(ctx, `CREATE PUBLICATION outbox_events FOR TABLE outbox.events WITH (publish = 'insert', publish_via_partition_root = true)`)
	require.NoError(t, err)
	cfg.Slot = fmt.Sprintf("missing_%08x", rand.Uint32())
	require.ErrorIs(t, runOnce(t, cfg, 30*time.Second), relay.ErrNoSlot)

	_, err = b.conn.Exec(ctx, `DROP PUBLICATION outbox_events`)
	require.NoError(t, err)
	cfg.NoCreate = false
	stop := runRelay(t, cfg)
	b.slot = cfg.Slot
	b.waitActive(t, 0)
	w := startWriter(t, b.url, 3, 3, 0, 50)
	<-w.done
	b.verifyExactlyOnce(t, time.Minute)
	require.ErrorIs(t, stop(), context.Canceled)
	// The walsender outlives the relay's closed connection by a moment.
	b.dropSlot(t)
}

// TestSlotRecreatedIsDetected: a slot dropped and recreated sits ahead of the
// checkpoint in Kafka; the relay refuses to go on unless told to.
func TestSlotRecreatedIsDetected(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	stop := runRelay(t, b.config(t))
	w := startWriter(t, b.url, 3, 3, 0, 30)
	<-w.done
	b.waitRelayed(t, 30, time.Minute)
	require.ErrorIs(t, stop(), context.Canceled)

	// The walsender outlives the relay's closed connection by a moment.
	b.dropSlot(t)
	// Events written while the slot is gone are lost to it.
	w = startWriter(t, b.url, 3, 3, 0, 10)
	<-w.done
	_, err := b.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, b.slot)
	require.NoError(t, err)
	err = runOnce(t, b.config(t), 30*time.Second)
	require.ErrorIs(t, err, relay.ErrSlotMoved)
	t.Log(err)

	cfg := b.config(t)
	cfg.AcceptSlotPosition = true
	runRelay(t, cfg)
	b.waitActive(t, 0)
	w = startWriter(t, b.url, 3, 3, 0, 20)
	<-w.done
	b.waitRelayed(t, 50, time.Minute)
}

// TestWALLevelNotLogical runs against a server with wal_level=replica.
func TestWALLevelNotLogical(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{Settings: map[string]string{"wal_level": "replica", "max_wal_senders": "4"}, DisableContainer: true})
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = c.Stop(sctx)
	})
	url, err := c.CreateDatabase(ctx, "walcheck")
	require.NoError(t, err)
	k := kafkaOpts(t)
	err = runOnce(t, relay.Config{DatabaseURL: url, KafkaOpts: k, Logger: testLogger(t)}, 30*time.Second)
	require.ErrorIs(t, err, relay.ErrWALLevel)
}

// TestWALLost: a slot whose WAL Postgres removed (max_slot_wal_keep_size) is
// reported as lost, with what the operator must do.
func TestWALLost(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{DisableContainer: true, Settings: map[string]string{
		"max_slot_wal_keep_size": "1MB", "max_wal_size": "32MB", "min_wal_size": "32MB", "wal_keep_size": "0",
	}})
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = c.Stop(sctx)
	})
	url, err := c.CreateDatabase(ctx, "wallost")
	require.NoError(t, err)
	m, err := migrations.Open(ctx, url, "outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT pg_create_logical_replication_slot('lost_slot', 'pgoutput')`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `CREATE TABLE filler (pad text)`)
	require.NoError(t, err)
	var status string
	require.Eventually(t, func() bool {
		for range 4 {
			_, err = conn.Exec(ctx, `INSERT INTO filler SELECT repeat('f', 1000) FROM generate_series(1, 5000)`)
			require.NoError(t, err)
			_, err = conn.Exec(ctx, `SELECT pg_switch_wal()`)
			require.NoError(t, err)
		}
		_, err = conn.Exec(ctx, `CHECKPOINT`)
		require.NoError(t, err)
		require.NoError(t, conn.QueryRow(ctx, `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'lost_slot'`).Scan(&status))
		return status == "lost"
	}, 2*time.Minute, 10*time.Millisecond, "slot never lost its WAL (wal_status %q)", status)

	err = runOnce(t, relay.Config{DatabaseURL: url, Slot: "lost_slot", KafkaOpts: kafkaOpts(t), Logger: testLogger(t)}, 30*time.Second)
	require.ErrorIs(t, err, relay.ErrWALLost)
	require.Contains(t, err.Error(), "pg_drop_replication_slot")
}

func kafkaOpts(t *testing.T) []kgo.Opt {
	t.Helper()
	return kafkatest.New(t).Opts()
}

// TestConfigValidation: New rejects what Run could not use.
func TestConfigValidation(t *testing.T) {
	t.Parallel()
	opts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
	for name, cfg := range map[string]relay.Config{
		"no url":             {KafkaOpts: opts},
		"no kafka":           {DatabaseURL: "postgres://x"},
		"bad slot":           {DatabaseURL: "postgres://x", KafkaOpts: opts, Slot: "Bad-Slot"},
		"bad schema":         {DatabaseURL: "postgres://x", KafkaOpts: opts, Schema: "a;b"},
		"bad template":       {DatabaseURL: "postgres://x", KafkaOpts: opts, TopicTemplate: "a topic"},
		"bad checkpoint":     {DatabaseURL: "postgres://x", KafkaOpts: opts, CheckpointTopic: "a/b"},
		"negative batch":     {DatabaseURL: "postgres://x", KafkaOpts: opts, MaxBatchEvents: -1},
		"split below batch":  {DatabaseURL: "postgres://x", KafkaOpts: opts, MaxBatchEvents: 100, SplitEvents: 10},
		"negative heartbeat": {DatabaseURL: "postgres://x", KafkaOpts: opts, HeartbeatInterval: -time.Second},
	} {
		_, err := relay.New(cfg)
		require.Error(t, err, name)
	}
	r, err := relay.New(relay.Config{DatabaseURL: "postgres://x", KafkaOpts: opts})
	require.NoError(t, err)
	require.Error(t, r.Ready(), "not ready before Run")
	require.False(t, errors.Is(r.Ready(), relay.ErrSlotInUse))
}
