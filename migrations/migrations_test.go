package migrations_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func tables(t *testing.T, url, schema string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`, schema)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)

	m, err := migrations.Open(ctx, url, "orders_outbox", nil)
	require.NoError(t, err)
	defer m.Close()

	res, err := m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, res, int(migrations.Latest()))
	got := tables(t, url, "orders_outbox")
	require.Contains(t, got, "events")
	require.Contains(t, got, "events_default")
	require.Contains(t, got, "idempotency_keys")
	require.Contains(t, got, "goose_db_version", "goose's version table lives in the outbox schema")
	// Day partitions from yesterday to three days ahead exist after migrating.
	day := time.Now().UTC().Format("20060102")
	require.Contains(t, got, "events_p"+day)

	// up on a migrated schema is a no-op.
	res, err = m.Up(ctx)
	require.NoError(t, err)
	require.Empty(t, res)
	cur, latest, err := m.Version(ctx)
	require.NoError(t, err)
	require.Equal(t, latest, cur)

	// The publication is named after the schema.
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var pub string
	require.NoError(t, conn.QueryRow(ctx, `SELECT pubname FROM pg_publication`).Scan(&pub))
	require.Equal(t, "orders_outbox_events", pub)

	_, err = m.DownTo(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, []string{"goose_db_version"}, tables(t, url, "orders_outbox"))
	var pubs int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication`).Scan(&pubs))
	require.Zero(t, pubs)

	res, err = m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, res, int(migrations.Latest()))
	require.Contains(t, tables(t, url, "orders_outbox"), "events")
}

func TestTwoSchemasInOneDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	for _, s := range []string{"alpha", "beta"} {
		m, err := migrations.Open(ctx, url, s, nil)
		require.NoError(t, err)
		_, err = m.Up(ctx)
		m.Close()
		require.NoError(t, err, s)
		require.Contains(t, tables(t, url, s), "events")
	}
}

func TestBadSchemaName(t *testing.T) {
	t.Parallel()
	_, err := migrations.Open(context.Background(), "postgres://localhost/x", "Robert'); DROP TABLE students;--", nil)
	require.ErrorIs(t, err, migrations.ErrBadSchema)
}

// TestPlainGooseCLI runs the files with the goose command-line tool (pinned as a
// Go tool dependency), as a DBA without our binary would.
func TestPlainGooseCLI(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	url := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE SCHEMA outbox`)
	require.NoError(t, err)

	dir, err := filepath.Abs(".")
	require.NoError(t, err)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	goose := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "goose", "-dir", dir, "postgres", url + sep + "search_path=outbox"}, args...)...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		return string(out)
	}
	goose("up")
	require.Contains(t, tables(t, url, "outbox"), "events")
	out := goose("status")
	require.Contains(t, out, "00001_outbox.sql")
	require.NotContains(t, out, "Pending")

	// And our runner sees the CLI's work as up to date.
	m, err := migrations.Open(ctx, url, "outbox", nil)
	require.NoError(t, err)
	defer m.Close()
	res, err := m.Up(ctx)
	require.NoError(t, err)
	require.Empty(t, res)
}
