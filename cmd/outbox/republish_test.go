package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/envelope"
)

// TestRepublishCommand runs `outbox republish` on rows that no relay ever
// streamed (no slot exists): the dry run lists them, the run publishes them
// with the republished header, a second run publishes nothing, and a bad
// window or a missing topic is a clear error.
func TestRepublishCommand(t *testing.T) {
	t.Parallel()
	b, ctx := setupOps(t)
	url := migratedDatabase(ctx, t)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	topic := b.prefix + ".orders"
	_, err = conn.Exec(ctx, `INSERT INTO outbox.events (aggregate_type, aggregate_id, event_type, topic, payload)
		SELECT 'Order', 'order-' || i, 'order.placed', $1, '{"n":1}' FROM generate_series(1, 25) i`, topic)
	require.NoError(t, err)

	args := []string{"republish", "--database-url", url, "--since", "1h", "--checkpoint-topic", b.prefix + ".ckpt"}
	r := b.run(t, append(args, "--dry-run")...)
	require.Equal(t, 1, r.code, "the target topic does not exist yet")
	require.Contains(t, r.stderr, "topic does not exist: "+topic)
	require.Contains(t, r.stderr, "outbox topics apply")

	b.k.CreateTopic(topic, 3, nil)
	r = b.run(t, append(args, "--dry-run")...)
	require.Zero(t, r.code)
	require.Contains(t, r.stdout, "dry run: 25 rows in the window (25 records), 0 already in Kafka, 25 would be published")
	require.Len(t, lines(r.stdout), 27, "a header, 25 rows and the summary")
	require.Contains(t, r.stdout, "Order/order-7")

	r = b.run(t, args...)
	require.Zero(t, r.code)
	require.Contains(t, r.stdout, "republished: 25 rows in the window (25 records), 0 already in Kafka, 25 published in 1 Kafka transactions")
	recs, err := b.k.ReadCommitted(ctx, topic)
	require.NoError(t, err)
	require.Len(t, recs, 25)
	for _, rec := range recs {
		var marked bool
		for _, h := range rec.Headers {
			marked = marked || h.Key == envelope.HeaderRepublished
		}
		require.True(t, marked, "every record carries %s", envelope.HeaderRepublished)
	}

	r = b.run(t, args...)
	require.Zero(t, r.code)
	require.Contains(t, r.stdout, "25 already in Kafka, 0 published")

	r = b.run(t, "republish", "--database-url", url)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "--since is required")
	r = b.run(t, "republish", "--database-url", url, "--since", "yesterday")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "want RFC 3339")
	r = b.run(t, "republish", "--database-url", url, "--since", "1h", "--until", "2h")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "must be after Since")
	r = b.run(t, "republish", "--database-url", url, "--since", "1h", "--event-id", "nope")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, fmt.Sprintf("--event-id %q", "nope"))
}
