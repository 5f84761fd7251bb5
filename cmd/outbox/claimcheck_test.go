package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/envelope"
)

// TestDLQShowClaimCheck: `outbox dlq show` prints a claim-checked dead
// letter's stored payload when it can reach the store, the reference and why
// not otherwise.
func TestDLQShowClaimCheck(t *testing.T) {
	t.Parallel()
	b, ctx := setupOps(t)
	url := migratedDatabase(ctx, t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	store, err := claimcheck.NewPostgres(claimcheck.PostgresConfig{DB: pool})
	require.NoError(t, err)

	payload := []byte(`{"attachment":"the stored payload, 20 MiB in real life"}`)
	stored := uuid.Must(uuid.NewV7())
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	ref, err := store.Put(ctx, tx, stored, payload)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	missing := claimcheck.NewRef("pg:"+uuid.Must(uuid.NewV7()).String(), []byte("pruned"))

	topic := b.prefix + ".dlt"
	b.k.CreateTopic(topic, 1, nil)
	cl, err := kgo.NewClient(append(b.k.Opts(), kgo.DefaultProduceTopic(topic))...)
	require.NoError(t, err)
	defer cl.Close()
	letter := func(r claimcheck.Ref) *kgo.Record {
		rec := &kgo.Record{Key: []byte("o-1"), Value: r.Stub()}
		for k, v := range r.Headers() {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		d := envelope.DeadLetter{OriginTopic: "outbox.order", Stage: "sink", StageName: "api", ErrorClass: "http_422",
			ErrorMessage: "rejected", Attempt: 1, At: time.Now()}
		for _, h := range d.Headers() {
			rec.Headers = append(rec.Headers, kgo.RecordHeader(h))
		}
		return rec
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, cl.ProduceSync(pctx, letter(ref), letter(missing)).FirstErr())

	r := b.run(t, "dlq", "show", "--topic", topic, "0:0", "--claim-check", "--claim-check-database-url", url)
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, string(payload))
	require.Contains(t, r.stdout, ref.URI+" (")
	require.Contains(t, r.stdout, "resolved, the value below is the stored payload")

	r = b.run(t, "dlq", "show", "--topic", topic, "0:0", "--json", "--claim-check", "--claim-check-database-url", url)
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, `"resolved": true`)
	require.Contains(t, r.stdout, `"attachment": "the stored payload`)

	r = b.run(t, "dlq", "show", "--topic", topic, "0:0")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "not resolved; pass --claim-check")
	require.Contains(t, r.stdout, string(ref.Stub()), "the value shown is the stub")

	r = b.run(t, "dlq", "show", "--topic", topic, "0:1", "--claim-check", "--claim-check-database-url", url)
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, missing.URI)
	require.Contains(t, r.stdout, "not resolved: claimcheck: "+missing.URI+": claimcheck: stored payload not found")

	r = b.run(t, "dlq", "show", "--topic", topic, "0:0", "--claim-check")
	require.Equal(t, 2, r.code, "--claim-check without a database is a usage error")
}
