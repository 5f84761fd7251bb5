package migrations_test

import (
	"bufio"
	"context"
	neturl "net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/ops/doctor"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
)

// The DBA path of docs/operations.md works on names that are global to a
// server (roles) or fixed by the doc (database shop). Tests elsewhere that run
// the same blocks on a shared server (OUTBOX_TEST_DATABASE_URL) hold this
// advisory lock, taken in the server's maintenance database, while they do.
const docDBALock = "outbox docs: the DBA path"

// docRoles are the roles the doc's blocks create, plus this test's read-only role.
var docRoles = []string{"outbox_owner", "outbox_relay", "order_service", "outbox_sink", "outbox_status_reader"}

type docBlock struct{ lang, body string }

// dbaBlocks returns the fenced blocks of the "Grants a DBA gives" section of
// docs/operations.md, in order.
func dbaBlocks(t *testing.T) []docBlock {
	t.Helper()
	raw, err := os.ReadFile("../docs/operations.md")
	require.NoError(t, err)
	doc := string(raw)
	start := strings.Index(doc, "\n### Grants a DBA gives\n")
	require.GreaterOrEqual(t, start, 0, "docs/operations.md has no section \"### Grants a DBA gives\"")
	section := doc[start+1:]
	if end := strings.Index(section, "\n#"); end >= 0 {
		section = section[:end]
	}
	var (
		blocks []docBlock
		cur    *docBlock
	)
	sc := bufio.NewScanner(strings.NewReader(section))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &docBlock{lang: strings.TrimPrefix(line, "```")}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.body += line + "\n"
		}
	}
	require.Nil(t, cur, "unterminated code block in the DBA section")
	return blocks
}

// docCommand is one `outbox ...` line of a sh block, its flags parsed.
type docCommand struct {
	args  []string // the words before the first flag: "migrate", "up"
	flags map[string]string
}

func parseCommands(t *testing.T, body string) []docCommand {
	t.Helper()
	var cmds []docCommand
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		words := strings.Fields(line)
		require.Equal(t, "outbox", words[0], "doc line %q", line)
		c := docCommand{flags: map[string]string{}}
		for i := 1; i < len(words); i++ {
			w := words[i]
			if !strings.HasPrefix(w, "--") {
				require.Empty(t, c.flags, "doc line %q: %q after a flag", line, w)
				c.args = append(c.args, w)
				continue
			}
			switch name := strings.TrimPrefix(w, "--"); name {
			case "publication-by-dba":
				c.flags[name] = "true"
			case "database-url", "schema":
				require.Less(t, i+1, len(words), "doc line %q: %s needs a value", line, w)
				c.flags[name] = words[i+1]
				i++
			default:
				t.Fatalf("doc line %q: flag %s is unknown to this test; teach it what the flag means", line, w)
			}
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// onServer points a doc URL (postgres://ROLE@db/shop) at the test server,
// keeping the doc's role and database. The doc's passwords are '...'.
func onServer(t *testing.T, serverURL, docURL string) string {
	t.Helper()
	d, err := neturl.Parse(docURL)
	require.NoError(t, err)
	u, err := neturl.Parse(serverURL)
	require.NoError(t, err)
	u.User = neturl.UserPassword(d.User.Username(), "...")
	u.Path = d.Path
	return u.String()
}

func psql(t *testing.T, ctx context.Context, url, script string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "psql (the Postgres client; install postgresql-client): %s", out)
}

// catalog lists every schema, relation and publication of the database: a
// read-only operation must leave it as it was.
func catalog(t *testing.T, ctx context.Context, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(ctx, `
		SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
		UNION ALL
		SELECT 'relation ' || n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
		UNION ALL
		SELECT 'publication ' || pubname FROM pg_publication
		ORDER BY 1`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

func openAs(t *testing.T, ctx context.Context, url string, c docCommand) *migrations.Migrator {
	t.Helper()
	m, err := migrations.OpenWithOptions(ctx, url, migrations.Options{
		Schema:           c.flags["schema"],
		PublicationByDBA: c.flags["publication-by-dba"] == "true",
	})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func states(st []*goose.MigrationStatus) []goose.State {
	var out []goose.State
	for _, s := range st {
		out = append(out, s.State)
	}
	return out
}

func allStates(s goose.State) []goose.State {
	return slices.Repeat([]goose.State{s}, int(migrations.Latest()))
}

// TestDBAPathFromTheDocs follows the "Grants a DBA gives" section of
// docs/operations.md: the DBA's SQL blocks run through psql exactly as written,
// and the `outbox migrate` lines run as the Migrator calls the command makes,
// with the doc's flags, as the doc's role, which has no CREATE on the database.
func TestDBAPathFromTheDocs(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	blocks := dbaBlocks(t)
	var langs []string
	for _, b := range blocks {
		langs = append(langs, b.lang)
	}
	require.Equal(t, []string{"sql", "sh", "sql", "sh", "sql"}, langs,
		"the DBA section's blocks changed: DBA SQL, migrate lines, DBA SQL, doctor line, slot SQL; update this test with the doc")
	dbaBefore, migrateLines, dbaAfter, doctorLines, slotSQL := blocks[0].body, parseCommands(t, blocks[1].body), blocks[2].body, parseCommands(t, blocks[3].body), blocks[4].body
	require.Len(t, migrateLines, 2)
	up, status := migrateLines[0], migrateLines[1]
	require.Equal(t, []string{"migrate", "up"}, up.args)
	require.Equal(t, []string{"migrate", "status"}, status.args)
	require.Len(t, doctorLines, 1)
	require.Equal(t, []string{"doctor"}, doctorLines[0].args)
	schema := up.flags["schema"]
	require.NotEmpty(t, schema)

	// The doc's names are global to the server: hold the lock, start clean.
	cluster := pgtest.Cluster(t)
	admin, err := pgx.Connect(ctx, cluster.URL())
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close(context.Background()) })
	_, err = admin.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, docDBALock)
	require.NoError(t, err)
	var leftover []string
	require.NoError(t, admin.QueryRow(ctx, `SELECT coalesce(array_agg(rolname::text), '{}') FROM pg_roles WHERE rolname = ANY($1)`, docRoles).Scan(&leftover))
	require.Empty(t, leftover, "roles left on the test server by an interrupted run: DROP ROLE them")
	shopURL, err := cluster.CreateDatabase(ctx, "shop")
	require.NoError(t, err, "database shop left on the test server by an interrupted run? drop it")
	t.Cleanup(func() {
		ctx := context.Background()
		if err := cluster.DropDatabase(ctx, "shop"); err != nil {
			t.Logf("drop database shop: %v", err)
		}
		for _, r := range docRoles {
			if _, err := admin.Exec(ctx, `DROP ROLE IF EXISTS `+r); err != nil {
				t.Logf("drop role %s: %v", r, err)
			}
		}
	})
	shop, err := pgx.Connect(ctx, shopURL)
	require.NoError(t, err)
	t.Cleanup(func() { shop.Close(context.Background()) })

	// Step 1: the DBA's roles and schema.
	psql(t, ctx, shopURL, dbaBefore)
	ownerURL := onServer(t, shopURL, up.flags["database-url"])
	var owner string
	var createOnDB bool
	conn, err := pgx.Connect(ctx, ownerURL)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, `SELECT current_user, has_database_privilege(current_database(), 'CREATE')`).Scan(&owner, &createOnDB))
	conn.Close(ctx)
	require.Equal(t, "outbox_owner", owner)
	require.False(t, createOnDB, "the doc's migrating role must not need CREATE on the database")

	// status on the empty schema, as the owner (who could create the version
	// table) and as the relay (USAGE only): all pending, nothing created.
	before := catalog(t, ctx, shop)
	st, err := openAs(t, ctx, ownerURL, status).Status(ctx)
	require.NoError(t, err)
	require.Equal(t, allStates(goose.StatePending), states(st))
	relayURL := onServer(t, shopURL, doctorLines[0].flags["database-url"])
	st, err = openAs(t, ctx, relayURL, status).Status(ctx)
	require.NoError(t, err)
	require.Equal(t, allStates(goose.StatePending), states(st))
	require.Equal(t, before, catalog(t, ctx, shop), "status created something")

	// Without the doc's --publication-by-dba, up stops before applying
	// anything and says what the DBA may do.
	noFlag := up
	noFlag.flags = map[string]string{"schema": schema}
	_, err = openAs(t, ctx, ownerURL, noFlag).Up(ctx)
	require.ErrorIs(t, err, migrations.ErrPrivilege)
	require.Contains(t, err.Error(), "GRANT CREATE ON DATABASE shop TO outbox_owner;")
	require.Contains(t, err.Error(), "--publication-by-dba")
	require.Equal(t, before, catalog(t, ctx, shop), "a refused up changed something")

	// Step 2: the migrating role's up and status.
	m := openAs(t, ctx, ownerURL, up)
	res, err := m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, res, int(migrations.Latest()))
	stmt, err := m.PublicationForDBA(ctx)
	require.NoError(t, err)
	require.Equal(t, migrations.PublicationSQL(schema, "")+";", stmt)
	// The statement up prints is the one the doc's step 3 runs.
	require.Contains(t, dbaAfter, stmt+"\n")
	st, err = openAs(t, ctx, ownerURL, status).Status(ctx)
	require.NoError(t, err)
	require.Equal(t, allStates(goose.StateApplied), states(st))
	for _, s := range st {
		require.WithinDuration(t, time.Now().UTC(), s.AppliedAt, time.Hour, "AppliedAt of %s", s.Source.Path)
	}
	// Before the DBA's step 3, doctor names the missing publication and its fix.
	r, err := doctor.Run(ctx, ownerURL, doctor.Options{Schema: schema})
	require.NoError(t, err)
	pub := statusOfCheck(r, "publication")
	require.Equal(t, doctor.Fail, pub.Status, r.String())
	require.Contains(t, pub.Fix, stmt)

	// Step 3: the DBA's publication and grants.
	psql(t, ctx, shopURL, dbaAfter)
	stmt, err = m.PublicationForDBA(ctx)
	require.NoError(t, err)
	require.Empty(t, stmt)

	// status as a role with only USAGE on the schema and SELECT on the version
	// table: it reads, and creates nothing.
	_, err = shop.Exec(ctx, `CREATE ROLE outbox_status_reader LOGIN;
		GRANT USAGE ON SCHEMA `+schema+` TO outbox_status_reader;
		GRANT SELECT ON `+schema+`.goose_db_version TO outbox_status_reader`)
	require.NoError(t, err)
	before = catalog(t, ctx, shop)
	readerURL := onServer(t, shopURL, "postgres://outbox_status_reader@db/shop")
	reader := openAs(t, ctx, readerURL, status)
	st, err = reader.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, allStates(goose.StateApplied), states(st))
	cur, latest, err := reader.Version(ctx)
	require.NoError(t, err)
	require.Equal(t, migrations.Latest(), cur)
	require.Equal(t, migrations.Latest(), latest)
	// up on an up-to-date schema is a no-op even for this role.
	res, err = reader.Up(ctx)
	require.NoError(t, err)
	require.Empty(t, res)
	require.Equal(t, before, catalog(t, ctx, shop), "status or a no-op up created something")

	// Step 4: doctor as the relay's role passes; the slot block makes its slot.
	r, err = doctor.Run(ctx, relayURL, doctor.Options{Schema: doctorLines[0].flags["schema"]})
	require.NoError(t, err)
	require.False(t, r.Failed(), r.String())
	require.Equal(t, doctor.OK, statusOfCheck(r, "publication").Status, r.String())
	require.Equal(t, doctor.OK, statusOfCheck(r, "migrations").Status, r.String())
	psql(t, ctx, shopURL, slotSQL)
	r, err = doctor.Run(ctx, relayURL, doctor.Options{Schema: schema})
	require.NoError(t, err)
	require.Equal(t, doctor.OK, statusOfCheck(r, "slot outbox_relay").Status, r.String())
	// The writer's grants are what it needs.
	r, err = doctor.Run(ctx, onServer(t, shopURL, "postgres://order_service@db/shop"), doctor.Options{Schema: schema})
	require.NoError(t, err)
	require.Equal(t, doctor.OK, statusOfCheck(r, "writer grants").Status, r.String())
}

func statusOfCheck(r doctor.Report, name string) doctor.Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return doctor.Check{}
}

// restrictedRole creates a LOGIN role without CREATE on the database and
// returns its name and URL; the role is dropped with the test's database.
func restrictedRole(t *testing.T, ctx context.Context, url string) (string, string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	role := "r_" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "_")
	role = role[:min(len(role), 60)]
	_, err = conn.Exec(ctx, `CREATE ROLE `+role+` LOGIN`)
	require.NoError(t, err)
	// Registered after the database's own cleanup, so it runs first; the
	// database goes later, with what the role owns in it.
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = conn.Exec(ctx, `DROP OWNED BY `+role)
		_, _ = conn.Exec(ctx, `DROP ROLE IF EXISTS `+role)
	})
	u, err := neturl.Parse(url)
	require.NoError(t, err)
	u.User = neturl.User(role)
	return role, u.String()
}

func TestRestrictedRoleWithoutSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	role, roleURL := restrictedRole(t, ctx, url)
	m, err := migrations.OpenWithOptions(ctx, roleURL, migrations.Options{Schema: "shop_outbox", PublicationByDBA: true})
	require.NoError(t, err)
	defer m.Close()
	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, allStates(goose.StatePending), states(st))
	_, err = m.Down(ctx)
	require.ErrorIs(t, err, goose.ErrNoNextVersion)
	res, err := m.DownTo(ctx, 0)
	require.NoError(t, err)
	require.Empty(t, res)
	_, err = m.Up(ctx)
	require.ErrorIs(t, err, migrations.ErrPrivilege)
	require.Contains(t, err.Error(), "CREATE SCHEMA shop_outbox AUTHORIZATION "+role+";")

	// A schema the role may use but not create in.
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE SCHEMA shop_outbox; GRANT USAGE ON SCHEMA shop_outbox TO `+role)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.ErrorIs(t, err, migrations.ErrPrivilege)
	require.Contains(t, err.Error(), "ALTER SCHEMA shop_outbox OWNER TO "+role+";")
	require.Empty(t, tables(t, url, "shop_outbox"))

	// Once it owns the schema, up works and leaves the publication to the DBA.
	_, err = conn.Exec(ctx, `ALTER SCHEMA shop_outbox OWNER TO `+role)
	require.NoError(t, err)
	res, err = m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, res, int(migrations.Latest()))
	stmt, err := m.PublicationForDBA(ctx)
	require.NoError(t, err)
	require.Equal(t, "CREATE PUBLICATION shop_outbox_events FOR TABLE shop_outbox.events WITH (publish = 'insert', publish_via_partition_root = true);", stmt)
	_, err = conn.Exec(ctx, stmt)
	require.NoError(t, err)
	var viaRoot, insert bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT pubviaroot, pubinsert FROM pg_publication WHERE pubname = 'shop_outbox_events'`).Scan(&viaRoot, &insert))
	require.True(t, viaRoot)
	require.True(t, insert)
}

// TestPublicationByDBAWithThePrivilege: a role that may create the
// publication creates it even when the DBA option is on.
func TestPublicationByDBAWithThePrivilege(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	m, err := migrations.OpenWithOptions(ctx, url, migrations.Options{PublicationByDBA: true})
	require.NoError(t, err)
	defer m.Close()
	_, err = m.Up(ctx)
	require.NoError(t, err)
	stmt, err := m.PublicationForDBA(ctx)
	require.NoError(t, err)
	require.Empty(t, stmt)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication WHERE pubname = 'outbox_events'`).Scan(&n))
	require.Equal(t, 1, n)
}
