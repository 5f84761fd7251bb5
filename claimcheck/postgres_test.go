package claimcheck_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
)

// testBundle is one test's migrated database, writer and store.
type testBundle struct {
	url    string
	pool   *pgxpool.Pool
	store  *claimcheck.Postgres
	writer *outbox.Writer
}

func setup(t *testing.T, cfg outbox.Config) *testBundle {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	m, err := migrations.Open(ctx, url, "outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store, err := claimcheck.NewPostgres(claimcheck.PostgresConfig{DB: pool})
	require.NoError(t, err)
	cfg.ClaimCheck.Store = store
	w, err := outbox.New(cfg)
	require.NoError(t, err)
	return &testBundle{url: url, pool: pool, store: store, writer: w}
}

func (b *testBundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox."+table).Scan(&n))
	return n
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func bigEvent(payload []byte) outbox.Event {
	return outbox.Event{AggregateType: "order", AggregateID: "o-1", EventType: "order.attachment_added",
		ContentType: "application/octet-stream", Payload: payload}
}

// TestPostgresWriteCommitResolve writes an oversized event and a marked small
// one: both rows carry the reference and a stub, both payloads resolve, and a
// small unmarked event stays inline.
func TestPostgresWriteCommitResolve(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, outbox.Config{MaxPayloadBytes: 1 << 10})
	big := randomBytes(t, 64<<10)
	marked := outbox.Event{AggregateType: "order", AggregateID: "o-2", EventType: "order.note", Payload: []byte(`{"note":"x"}`), ClaimCheck: true}
	plain := outbox.Event{AggregateType: "order", AggregateID: "o-3", EventType: "order.note", Payload: []byte(`{"n":1}`)}

	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	ids, err := b.writer.Write(ctx, tx, bigEvent(big), marked, plain)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 2, b.count(t, "claim_check_payloads"))

	r := claimcheck.NewResolver(b.store)
	for i, want := range [][]byte{big, marked.Payload, plain.Payload} {
		var payload, headers []byte
		require.NoError(t, b.pool.QueryRow(ctx, "SELECT payload, headers FROM outbox.events WHERE event_id = $1", ids[i]).Scan(&payload, &headers))
		h := map[string]string{}
		require.NoError(t, jsonUnmarshal(headers, &h))
		got, ref, ok, err := r.ResolveHeaders(ctx, func(k string) (string, bool) { v, ok := h[k]; return v, ok }, payload)
		require.NoError(t, err)
		require.Equal(t, want, got)
		if i == 2 {
			require.False(t, ok, "a small unmarked event is not claim-checked")
			continue
		}
		require.True(t, ok)
		require.Equal(t, "pg:"+ids[i].String(), ref.URI)
		require.Less(t, len(payload), 300, "the row carries a stub, not the payload")
		require.Equal(t, ref.Stub(), payload)
	}

	// Without claim-check an oversized event is still rejected.
	off, err := outbox.New(outbox.Config{MaxPayloadBytes: 1 << 10})
	require.NoError(t, err)
	tx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = off.Write(ctx, tx, bigEvent(big))
	require.ErrorIs(t, err, outbox.ErrPayloadTooLarge)
	_, err = off.Write(ctx, tx, marked)
	require.ErrorIs(t, err, outbox.ErrClaimCheckOff)
}

// TestPostgresRollbackLeavesNothing: the payload is written in the caller's
// transaction, so a rollback leaves neither the event nor its payload, and
// the same write in a Batch behaves the same.
func TestPostgresRollbackLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, outbox.Config{MaxPayloadBytes: 1 << 10})
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.writer.Write(ctx, tx, bigEvent(randomBytes(t, 8<<10)))
	require.NoError(t, err)
	var inTx int
	require.NoError(t, tx.QueryRow(ctx, "SELECT count(*) FROM outbox.claim_check_payloads").Scan(&inTx))
	require.Equal(t, 1, inTx, "the payload is written inside the transaction")
	require.NoError(t, tx.Rollback(ctx))
	require.Zero(t, b.count(t, "claim_check_payloads"))
	require.Zero(t, b.count(t, "events"))

	// Batch.Write queues the payload into the same batch.
	tx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	batch := b.writer.NewBatch()
	_, err = batch.Write(ctx, bigEvent(randomBytes(t, 8<<10)))
	require.NoError(t, err)
	_, err = batch.Run(ctx, tx)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))
	require.Zero(t, b.count(t, "claim_check_payloads"))
	_, err = b.writer.NewBatch().ClaimAndWrite(ctx, outbox.Key{Key: "k"}, "fp", nil, bigEvent(randomBytes(t, 8<<10)))
	require.ErrorIs(t, err, outbox.ErrClaimCheckUnsupported)
}

// TestPostgresRetention: maintain drops a day of stored payloads with the
// same day of events, also rows that sat in the default partitions, and the
// table is not in the relay's publication.
func TestPostgresRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, outbox.Config{MaxPayloadBytes: 1 << 10})
	old := time.Now().Add(-10 * 24 * time.Hour)
	oldID := uuidAt(t, old)
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	ev := bigEvent(randomBytes(t, 4<<10))
	ev.ID = oldID
	_, err = b.writer.Write(ctx, tx, ev)
	require.NoError(t, err)
	fresh := bigEvent(randomBytes(t, 4<<10))
	freshIDs, err := b.writer.Write(ctx, tx, fresh)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 2, b.count(t, "claim_check_payloads"))

	// Give the old day its partitions (a maintain run then), moving the rows
	// out of the default partitions, then drop it with a 7-day retention.
	_, err = b.writer.Maintain(ctx, b.pool, outbox.MaintainOptions{Retention: 30 * 24 * time.Hour, Now: &old})
	require.NoError(t, err)
	day := "claim_check_payloads_p" + old.UTC().Format("20060102")
	require.Equal(t, 1, b.count(t, day), "maintain moved the old payload into its day partition")
	require.Zero(t, b.count(t, "claim_check_payloads_default"))

	acts, err := b.writer.Maintain(ctx, b.pool, outbox.MaintainOptions{Retention: 7 * 24 * time.Hour})
	require.NoError(t, err)
	require.Contains(t, acts, outbox.MaintainAction{Action: "dropped", Object: day})
	require.Contains(t, acts, outbox.MaintainAction{Action: "dropped", Object: "events_p" + old.UTC().Format("20060102")})

	var n int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM outbox.claim_check_payloads WHERE event_id = $1", oldID).Scan(&n))
	require.Zero(t, n, "the old payload is gone")
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM outbox.events WHERE event_id = $1", oldID).Scan(&n))
	require.Zero(t, n, "with its event")
	_, err = claimcheck.NewResolver(b.store).Resolve(ctx, claimcheck.NewRef("pg:"+oldID.String(), ev.Payload))
	require.ErrorIs(t, err, claimcheck.ErrNotFound)
	got, err := claimcheck.NewResolver(b.store).Resolve(ctx, claimcheck.NewRef("pg:"+freshIDs[0].String(), fresh.Payload))
	require.NoError(t, err)
	require.Equal(t, fresh.Payload, got)

	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'outbox_events' AND tablename LIKE 'claim_check%'").Scan(&n))
	require.Zero(t, n, "payloads are not streamed by the relay")
}

// TestResolverErrors: a missing payload, a corrupt one, malformed headers and
// an unknown scheme each give their sentinel with a message naming the ref.
func TestResolverErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, outbox.Config{})
	r := claimcheck.NewResolver(b.store)
	id := uuid.Must(uuid.NewV7())
	payload := []byte("attachment bytes")

	_, err := r.Resolve(ctx, claimcheck.NewRef("pg:"+id.String(), payload))
	require.ErrorIs(t, err, claimcheck.ErrNotFound)
	require.Contains(t, err.Error(), id.String())

	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	ref, err := b.store.Put(ctx, tx, id, payload)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	got, err := r.Resolve(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, payload, got)

	_, err = b.pool.Exec(ctx, "UPDATE outbox.claim_check_payloads SET payload = 'attachment bytez' WHERE event_id = $1", id)
	require.NoError(t, err)
	_, err = r.Resolve(ctx, ref)
	require.ErrorIs(t, err, claimcheck.ErrDigestMismatch)
	require.Contains(t, err.Error(), "sha256")
	_, err = b.pool.Exec(ctx, "UPDATE outbox.claim_check_payloads SET payload = 'short' WHERE event_id = $1", id)
	require.NoError(t, err)
	_, err = r.Resolve(ctx, ref)
	require.ErrorIs(t, err, claimcheck.ErrDigestMismatch)

	h := ref.Headers()
	h[claimcheck.HeaderSHA256] = "not-hex"
	_, _, err = claimcheck.FromMap(h)
	require.ErrorIs(t, err, claimcheck.ErrInvalidRef)
	_, err = r.Resolve(ctx, claimcheck.NewRef("s3://bucket/key", payload))
	require.ErrorIs(t, err, claimcheck.ErrNoStore)
	_, ok, err := claimcheck.FromMap(map[string]string{"event_id": id.String()})
	require.NoError(t, err)
	require.False(t, ok)
}

// uuidAt is a UUIDv7 minted at ts.
func uuidAt(t *testing.T, ts time.Time) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	ms := uint64(ts.UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (40 - 8*i))
	}
	return id
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
