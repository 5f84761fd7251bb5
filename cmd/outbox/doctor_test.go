package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestDoctorFindsGapAfterSlotDrop runs a real relay until it has committed a
// checkpoint, stops it and checks `outbox doctor --brokers` says there is no
// gap; then drops the relay's slot (as a failover to a standby without it
// does) and checks doctor fails with the republish command.
func TestDoctorFindsGapAfterSlotDrop(t *testing.T) {
	t.Parallel()
	b, ctx := setupOps(t)
	url := migratedDatabase(ctx, t)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(context.Background())

	// Slots are per Postgres cluster, shared by the test binary: a unique one.
	slot := fmt.Sprintf("doctor_%d_%s", os.Getpid(), b.prefix)
	ckpt := b.prefix + ".ckpt"
	topic := b.prefix + ".orders"
	b.k.CreateTopic(topic, 1, nil)
	doctorArgs := []string{"doctor", "--database-url", url, "--slot", slot, "--checkpoint-topic", ckpt}

	// Before the relay ran: neither slot nor checkpoint topic, no gap.
	r := b.run(t, doctorArgs...)
	require.Zero(t, r.code, r.stdout)
	require.Regexp(t, `\[OK  \] gap `+slot+` +no slot `+slot+` and no checkpoint`, r.stdout)

	relay := startStage(t, nil, "relay", "--database-url", url, "--brokers", b.k.Brokers[0], "--slot", slot,
		"--checkpoint-topic", ckpt, "--transactional-id", "outbox-relay-"+slot, "--heartbeat", "1s")
	waitSlotActive(ctx, t, conn, relay, slot)
	_, err = conn.Exec(ctx, `INSERT INTO outbox.events (aggregate_type, aggregate_id, event_type, topic, payload)
		VALUES ('Order', 'order-1', 'order.placed', $1, '{"n":1}')`, topic)
	require.NoError(t, err)
	eventually(t, time.Minute, "the event in Kafka", func() error {
		relay.running(t)
		recs, err := b.k.ReadCommitted(ctx, topic)
		if err != nil {
			return err
		}
		if len(recs) != 1 {
			return fmt.Errorf("%d records", len(recs))
		}
		return nil
	})
	relay.stop(t, 30*time.Second)

	r = b.run(t, doctorArgs...)
	require.Zero(t, r.code, r.stdout)
	require.Regexp(t, `\[OK  \] gap `+slot+` +no gap: slot at [0-9A-F]+/[0-9A-F]+, checkpoint at`, r.stdout)

	// The walsender outlives the relay process by a moment.
	eventually(t, 30*time.Second, "drop the slot once its walsender is gone", func() error {
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
		return err
	})
	r = b.run(t, doctorArgs...)
	require.Equal(t, 1, r.code, r.stdout)
	require.Regexp(t, `\[FAIL\] gap `+slot+` +slot `+slot+` is missing, but the relay's checkpoint exists`, r.stdout)
	require.Regexp(t, "`outbox republish --database-url \\.\\.\\. --brokers \\.\\.\\. --schema outbox --slot "+slot+
		" --since [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z --checkpoint-topic "+regexp.QuoteMeta(ckpt)+"`", r.stdout)
	require.Contains(t, r.stdout, "--on-slot-loss=republish")

	// Without Kafka the doctor says how to check for gaps, and fails nothing.
	r = outboxBin(t, nil, doctorArgs...)
	require.Zero(t, r.code, r.stdout)
	require.Regexp(t, `\[INFO\] gap `+slot+` +not checked: pass --brokers`, r.stdout)
}
