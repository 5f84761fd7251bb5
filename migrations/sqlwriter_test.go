package migrations_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
)

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// v7At is a UUIDv7 whose time is t.
func v7At(t time.Time) uuid.UUID {
	id := uuid.Must(uuid.NewV7())
	ms := uint64(t.UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (40 - 8*i))
	}
	return id
}

// upTo2 migrates a new database as a release before 00003 did: 00001 and
// 00002 only, with goose itself, into the default schema.
func upTo2(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	cfg.RuntimeParams["search_path"] = migrations.DefaultSchema
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	_, err = db.ExecContext(ctx, "CREATE SCHEMA "+migrations.DefaultSchema)
	require.NoError(t, err)
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	require.NoError(t, err)
	res, err := p.UpTo(ctx, 2)
	require.NoError(t, err)
	require.Len(t, res, 2)
}

// TestSQLWriterMigrationOnInstalledDatabase: 00003 goes onto a database
// migrated to 00002 whose events and idempotency keys were written before it,
// including rows it would refuse now; they are neither checked nor rewritten
// (00003 adds no constraint, so there is nothing to validate, NOT VALID or
// not), a key completed before it is replayed by claim_key, maintain() still
// moves old rows between partitions, and its Down restores the old behaviour.
func TestSQLWriterMigrationOnInstalledDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	upTo2(t, url)
	m, err := migrations.Open(ctx, url, "", nil)
	require.NoError(t, err)
	defer m.Close()
	current, _, err := m.Version(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, current)

	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `INSERT INTO outbox.idempotency_keys (scope, idem_key, fingerprint, status, response_code, response_body, completed_at, expires_at)
		VALUES ('c-1', 'before-00003', 'fp', 'completed', 201, '\x7b7d', now(), now() + interval '1 day')`)
	require.NoError(t, err)
	insert := `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES ($1, 'order', 'A-1', 'order.created', $2)`
	future := time.Now().UTC().AddDate(0, 0, 20)
	old := map[uuid.UUID][]byte{
		uuid.New():       []byte("not json, v4 id"),
		v7At(future):     []byte("not json, a day without its partition yet"),
		v7At(time.Now()): []byte(`{"fine":true}`),
	}
	for id, p := range old {
		_, err = conn.Exec(ctx, insert, id, p)
		require.NoError(t, err, "before 00003 anything went in")
	}
	snapshot := func() string {
		var s string
		require.NoError(t, conn.QueryRow(ctx, `SELECT string_agg(event_id::text || ' ' || encode(payload, 'hex') || ' ' || headers::text, ',' ORDER BY event_id) FROM outbox.events`).Scan(&s))
		return s
	}
	before := snapshot()
	constraints := func() string {
		var s string
		require.NoError(t, conn.QueryRow(ctx, `SELECT string_agg(conrelid::regclass || ' ' || conname || ' ' || convalidated, ',' ORDER BY conrelid::regclass::text, conname)
			FROM pg_constraint WHERE connamespace = 'outbox'::regnamespace
			-- the tables of 00001 and 00002; later migrations add tables of their own
			AND conrelid::regclass::text ~ '^outbox\.(events|idempotency_keys|sink_ledger|sink_attempts|goose_db_version)(_p[0-9]{8}|_default)?$'`).Scan(&s))
		return s
	}
	constraintsBefore := constraints()

	res, err := m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, res, int(migrations.Latest())-2, "00003 and what came after it")
	require.Equal(t, before, snapshot(), "old rows are not rewritten")
	var outcome string
	var code int
	require.NoError(t, conn.QueryRow(ctx, `SELECT outcome, response_code FROM outbox.claim_key('c-1', 'before-00003', 'fp')`).Scan(&outcome, &code))
	require.Equal(t, "replay", outcome)
	require.Equal(t, 201, code)
	require.Equal(t, constraintsBefore, constraints(), "00003 adds no constraint that old rows would have to meet")
	_, err = conn.Exec(ctx, insert, uuid.New(), []byte(`{}`))
	require.Equal(t, "OB001", sqlState(err), "new rows are checked: %v", err)

	// maintain() moves the refused-looking old row out of the default
	// partition into its new day: moves are not inserts through the trigger.
	var moved string
	require.NoError(t, conn.QueryRow(ctx, `SELECT string_agg(object, ',') FROM outbox.maintain('30 days', 3, $1) WHERE action = 'created'`, future).Scan(&moved))
	require.Contains(t, moved, "events_p"+future.Format("20060102")+" (moved 1 rows from events_default)")
	require.Equal(t, before, snapshot())
	// The trigger and the default reach the new partition too.
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'events_validate' AND tgrelid = $1::regclass`, "outbox.events_p"+future.Format("20060102")).Scan(&n))
	require.Equal(t, 1, n)
	_, err = conn.Exec(ctx, `INSERT INTO outbox.events (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', 'A-1', 'order.paid', '\x7b7d')`)
	require.NoError(t, err)

	// Down removes every object 00003 made; Up again restores them.
	_, err = m.DownTo(ctx, 2)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_proc p JOIN pg_namespace ns ON ns.oid = p.pronamespace
		WHERE ns.nspname = 'outbox' AND p.proname IN ('uuid7', 'events_validate', 'write_event', 'fingerprint', 'claim_key', 'complete_key')`).Scan(&n))
	require.Zero(t, n)
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'events_validate'`).Scan(&n))
	require.Zero(t, n)
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
		WHERE a.attname = 'event_id'`).Scan(&n))
	require.Zero(t, n, "no partition keeps the event_id default")
	_, err = conn.Exec(ctx, insert, uuid.New(), []byte("unchecked again"))
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	var id uuid.UUID
	require.NoError(t, conn.QueryRow(ctx, `SELECT outbox.write_event('order', 'A-1', 'order.paid', '{}')`).Scan(&id))
	require.Equal(t, uuid.Version(7), id.Version())
}

// TestUUID7UsesServerUUIDv7: where the server has uuidv7() (Postgres 18+),
// uuid7() is it. The test database gets a stand-in pg_catalog.uuidv7() before
// migrating, so the Postgres 18 branch runs on any server.
func TestUUID7UsesServerUUIDv7(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	const fixed = "01890a5d-ac96-774b-bcce-b302099a8057"
	var native bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regprocedure('pg_catalog.uuidv7()') IS NOT NULL`).Scan(&native))
	if !native {
		_, err = conn.Exec(ctx, `CREATE FUNCTION pg_catalog.uuidv7() RETURNS uuid LANGUAGE sql AS $$ SELECT '`+fixed+`'::uuid $$`)
		require.NoError(t, err, "the stand-in needs a superuser")
	}

	m, err := migrations.Open(ctx, url, "", nil)
	require.NoError(t, err)
	defer m.Close()
	_, err = m.Up(ctx)
	require.NoError(t, err)
	var src string
	var id uuid.UUID
	require.NoError(t, conn.QueryRow(ctx, `SELECT p.prosrc, outbox.uuid7() FROM pg_proc p JOIN pg_namespace ns ON ns.oid = p.pronamespace
		WHERE ns.nspname = 'outbox' AND p.proname = 'uuid7'`).Scan(&src, &id))
	require.Equal(t, "SELECT pg_catalog.uuidv7()", src)
	if !native {
		require.Equal(t, fixed, id.String())
	}
	require.Equal(t, uuid.Version(7), id.Version())
}
