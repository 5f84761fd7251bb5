package doctor_test

import (
	"context"
	neturl "net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/internal/ops/doctor"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func statusOf(r doctor.Report, name string) doctor.Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return doctor.Check{}
}

func TestMigratedDatabaseIsHealthy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	m, err := migrations.Open(ctx, url, "", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	m.Close()
	// A slot the relay would hold shows up with its retained WAL.
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT pg_create_logical_replication_slot('doctor_test_slot', 'pgoutput')`)
	require.NoError(t, err)

	r, err := doctor.Run(ctx, url, doctor.Options{})
	require.NoError(t, err)
	require.False(t, r.Failed(), r.String())
	require.Equal(t, doctor.OK, statusOf(r, "wal_level").Status)
	require.Contains(t, statusOf(r, "migrations").Detail, "at version")
	require.Equal(t, doctor.OK, statusOf(r, "slot doctor_test_slot").Status, r.String())
}

func TestUnmigratedDatabaseSaysWhatToRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	r, err := doctor.Run(ctx, url, doctor.Options{Schema: "orders_outbox"})
	require.NoError(t, err)
	require.True(t, r.Failed())
	mig := statusOf(r, "migrations")
	require.Equal(t, doctor.Fail, mig.Status)
	require.Contains(t, mig.Fix, "outbox migrate up --database-url URL --schema orders_outbox")
	pub := statusOf(r, "publication")
	require.Equal(t, doctor.Fail, pub.Status)
	require.Contains(t, pub.Detail, "orders_outbox_events is missing")
	require.Contains(t, pub.Fix, "outbox migrate up --database-url URL --schema orders_outbox` (URL: the database doctor checked) first")
	require.Contains(t, pub.Fix, "CREATE PUBLICATION orders_outbox_events FOR TABLE orders_outbox.events")
	require.Contains(t, r.String(), "fix: ")
	// doctor changed nothing: the schema still does not exist.
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'orders_outbox'`).Scan(&n))
	require.Zero(t, n)
}

func TestRoleWithoutReplication(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	role := "app_" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "_")
	_, err = conn.Exec(ctx, `CREATE ROLE `+role+` LOGIN`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), `DROP ROLE IF EXISTS `+role) })
	u, err := neturl.Parse(url)
	require.NoError(t, err)
	u.User = neturl.User(role)
	r, err := doctor.Run(ctx, u.String(), doctor.Options{})
	require.NoError(t, err)
	c := statusOf(r, "replication right")
	require.Equal(t, doctor.Fail, c.Status, r.String())
	require.Contains(t, c.Fix, "REPLICATION")
}

func TestWrongURLIsAClearError(t *testing.T) {
	t.Parallel()
	_, err := doctor.Run(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=2", doctor.Options{})
	require.ErrorIs(t, err, doctor.ErrConnect)
	require.Contains(t, err.Error(), "check the URL")
}

// TestWalLevelNotLogical starts a second server with wal_level=replica, as a
// default Postgres install has.
func TestWalLevelNotLogical(t *testing.T) {
	t.Parallel()
	if os.Getenv(pgtest.EnvDatabaseURL) != "" {
		// A given server's settings are what they are; a local one is started
		// for this check whatever the URL says.
		t.Log("starting a local server with wal_level=replica beside the given one")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgtest.Start(ctx, pgcluster.Config{Settings: map[string]string{"wal_level": "replica"}})
	require.NoError(t, err)
	defer c.Stop(context.Background()) //nolint:errcheck
	r, err := doctor.Run(ctx, c.URL(), doctor.Options{})
	require.NoError(t, err)
	w := statusOf(r, "wal_level")
	require.Equal(t, doctor.Fail, w.Status)
	require.Equal(t, "replica", w.Detail)
	require.Contains(t, w.Fix, "wal_level = logical")
}

// TestPublicationLeftToTheDBA: a migrated schema whose publication is missing
// (migrate up --publication-by-dba by a role without CREATE on the database)
// or does not publish via the partition root fails with the DBA's statement.
func TestPublicationLeftToTheDBA(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	m, err := migrations.Open(ctx, url, "shop_outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	m.Close()
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `DROP PUBLICATION shop_outbox_events`)
	require.NoError(t, err)

	r, err := doctor.Run(ctx, url, doctor.Options{Schema: "shop_outbox"})
	require.NoError(t, err)
	pub := statusOf(r, "publication")
	require.Equal(t, doctor.Fail, pub.Status, r.String())
	require.Contains(t, pub.Detail, "shop_outbox_events is missing")
	stmt := "CREATE PUBLICATION shop_outbox_events FOR TABLE shop_outbox.events WITH (publish = 'insert', publish_via_partition_root = true);"
	require.Contains(t, pub.Fix, "the DBA")
	require.Contains(t, pub.Fix, stmt)
	require.NotContains(t, pub.Fix, "migrate up", "the schema is migrated: migrate up would not create it again")

	// The statement works as printed.
	_, err = conn.Exec(ctx, stmt)
	require.NoError(t, err)
	r, err = doctor.Run(ctx, url, doctor.Options{Schema: "shop_outbox"})
	require.NoError(t, err)
	require.Equal(t, doctor.OK, statusOf(r, "publication").Status, r.String())

	// Not via the partition root: a failure, with the statements that fix it.
	_, err = conn.Exec(ctx, `ALTER PUBLICATION shop_outbox_events SET (publish_via_partition_root = false)`)
	require.NoError(t, err)
	r, err = doctor.Run(ctx, url, doctor.Options{Schema: "shop_outbox"})
	require.NoError(t, err)
	pub = statusOf(r, "publication")
	require.Equal(t, doctor.Fail, pub.Status, r.String())
	require.Contains(t, pub.Detail, "partition root")
	_, err = conn.Exec(ctx, strings.TrimPrefix(pub.Fix, "the DBA runs: "))
	require.NoError(t, err, pub.Fix)
	r, err = doctor.Run(ctx, url, doctor.Options{Schema: "shop_outbox"})
	require.NoError(t, err)
	require.Equal(t, doctor.OK, statusOf(r, "publication").Status, r.String())

	// A publication of another table, inserts only.
	_, err = conn.Exec(ctx, `ALTER PUBLICATION shop_outbox_events SET TABLE shop_outbox.idempotency_keys`)
	require.NoError(t, err)
	r, err = doctor.Run(ctx, url, doctor.Options{Schema: "shop_outbox"})
	require.NoError(t, err)
	pub = statusOf(r, "publication")
	require.Equal(t, doctor.Fail, pub.Status, r.String())
	require.Contains(t, pub.Detail, "does not cover shop_outbox.events")
}
