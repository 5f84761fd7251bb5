package pgcluster_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
)

type standbyBundle struct {
	ctx     context.Context
	primary *pgcluster.Cluster
	standby *pgcluster.Cluster
}

// setupStandby starts a primary with the harness's defaults and a standby of it.
func setupStandby(t *testing.T) *standbyBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	primary, err := pgcluster.Start(ctx, pgcluster.Config{DisableContainer: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = primary.Stop(context.Background()) })
	standby, err := primary.StartStandby(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = standby.Stop(context.Background()) })
	return &standbyBundle{ctx: ctx, primary: primary, standby: standby}
}

// TestStandbyFailoverAndBack fails over from a to b and back to a, rebuilding
// the killed server as a standby each time, and checks that no committed row
// is lost and that one multi-host read-write URL always reaches the primary.
func TestStandbyFailoverAndBack(t *testing.T) {
	t.Parallel()
	bundle := setupStandby(t)
	ctx, a, b := bundle.ctx, bundle.primary, bundle.standby
	portA, portB := a.Port(), b.Port()
	require.NotEqual(t, portA, portB)
	require.Equal(t, "true", queryString(t, b.URL(), `SELECT pg_is_in_recovery()::text`))
	require.Equal(t, "logical", queryString(t, b.URL(), `SHOW wal_level`), "a standby keeps the primary's settings")

	// A database made on the primary after the standby started reaches it; the
	// standby itself refuses to make one.
	dbA, err := a.CreateDatabase(ctx, "failover")
	require.NoError(t, err)
	execSQL(t, dbA, `CREATE TABLE events (id int PRIMARY KEY)`)
	_, err = b.CreateDatabase(ctx, "on_standby")
	require.ErrorContains(t, err, "read-only")

	multi := pgcluster.MultiHostURL("failover", a, b)
	require.Contains(t, multi, "127.0.0.1:"+strconv.Itoa(portA)+",127.0.0.1:"+strconv.Itoa(portB)+"/failover?")
	require.Contains(t, multi, "target_session_attrs=read-write")

	insert(t, a, 1, 3)
	waitRows(t, b, 3)
	requireWriter(t, multi, portA)

	// Fail over to b.
	require.NoError(t, a.Kill())
	require.Zero(t, a.PID())
	require.NoError(t, b.Promote(ctx))
	insert(t, b, 4, 6)
	requireWriter(t, multi, portB)

	require.NoError(t, a.RebuildAsStandbyOf(ctx, b))
	require.Equal(t, portA, a.Port(), "same port after a rebuild")
	waitRows(t, a, 6)
	requireWriter(t, multi, portB) // a is up again, but read-only

	// And back to a.
	dirB := dataDir(t, b)
	require.NoError(t, b.Kill())
	require.NoError(t, a.Promote(ctx))
	requireRows(t, a, 6)
	insert(t, a, 7, 7)
	requireWriter(t, multi, portA)

	require.NoError(t, b.RebuildAsStandbyOf(ctx, a))
	require.Equal(t, portB, b.Port())
	waitRows(t, b, 7)
	requireWriter(t, multi, portA)

	// Stop removes a standby's temporary directory as it does a primary's.
	require.NoError(t, b.Stop(ctx))
	_, err = os.Stat(dirB)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestStandbyNeedsLocalCluster: a server the harness did not start has no
// standby and cannot be killed.
func TestStandbyNeedsLocalCluster(t *testing.T) {
	t.Parallel()
	bundle := setupStandby(t)
	byURL, err := pgcluster.Start(bundle.ctx, pgcluster.Config{URL: bundle.primary.URL()})
	require.NoError(t, err)
	_, err = byURL.StartStandby(bundle.ctx)
	require.ErrorContains(t, err, "only a local cluster can have a standby, this one is url")
	require.ErrorContains(t, byURL.Kill(), "only a local cluster can be killed")
	require.Equal(t, bundle.primary.Port(), byURL.Port())
	require.ErrorContains(t, bundle.primary.Promote(bundle.ctx), "recovery is not in progress")
}

// requireWriter connects through url and checks it reached the primary on port.
func requireWriter(t *testing.T, url string, port int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var inRecovery bool
	var got int
	require.NoError(t, conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), inet_server_port()`).Scan(&inRecovery, &got))
	require.False(t, inRecovery)
	require.Equal(t, port, got)
}

func insert(t *testing.T, c *pgcluster.Cluster, from, to int) {
	t.Helper()
	execSQL(t, c.DatabaseURL("failover"), `INSERT INTO events SELECT generate_series($1::int, $2::int)`, from, to)
}

// waitRows waits until c's events table has n rows, as a standby's does once
// it has replayed the primary's WAL.
func waitRows(t *testing.T, c *pgcluster.Cluster, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := countRows(c)
		if err == nil && got == n {
			return
		}
		require.True(t, time.Now().Before(deadline), "%d rows on port %d, want %d (last error: %v)", got, c.Port(), n, err)
		time.Sleep(20 * time.Millisecond)
	}
}

func requireRows(t *testing.T, c *pgcluster.Cluster, n int) {
	t.Helper()
	got, err := countRows(c)
	require.NoError(t, err)
	require.Equal(t, n, got)
}

func countRows(c *pgcluster.Cluster) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DatabaseURL("failover"))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n)
	return n, err
}

func execSQL(t *testing.T, url, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	require.NoError(t, err)
}

func queryString(t *testing.T, url, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var s string
	require.NoError(t, conn.QueryRow(ctx, sql).Scan(&s))
	return s
}

// dataDir is the directory a running local cluster's postmaster was given with
// -D, less its data/ part: the harness's directory for the server.
func dataDir(t *testing.T, c *pgcluster.Cluster) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.PID()), "cmdline"))
	require.NoError(t, err)
	args := bytes.Split(b, []byte{0})
	for i := range args[:len(args)-1] {
		if string(args[i]) == "-D" {
			return filepath.Dir(string(args[i+1]))
		}
	}
	t.Fatalf("no -D in %q", b)
	return ""
}
