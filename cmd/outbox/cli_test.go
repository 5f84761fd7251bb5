package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
)

// outboxBin runs the built outbox binary with only the OUTBOX_* variables
// given (runBinary, kafka_secure_test.go).
func outboxBin(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	return runBinary(t, env, 2*time.Minute, args...)
}

// tableExists reports whether schema.table exists in the database at url.
func tableExists(t *testing.T, url, schema, table string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, schema+"."+table).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestMigrateFlagsAfterActionWinOverEnvironment(t *testing.T) {
	named := pgtest.NewDatabase(t)
	other := pgtest.NewDatabase(t)
	env := map[string]string{"OUTBOX_DATABASE_URL": other, "OUTBOX_SCHEMA": "envschema"}

	r := outboxBin(t, env, "migrate", "up", "--database-url", named, "--schema", "shop")
	if r.code != 0 {
		t.Fatalf("migrate up: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !tableExists(t, named, "shop", "events") {
		t.Fatalf("migrate up --database-url NAMED --schema shop did not create shop.events in the named database\n%s%s", r.stdout, r.stderr)
	}
	if tableExists(t, other, "envschema", "events") || tableExists(t, other, "shop", "events") {
		t.Fatal("migrate up acted on OUTBOX_DATABASE_URL although --database-url was given")
	}
	if !strings.Contains(r.stderr, "schema shop") || strings.Contains(r.stderr, other) {
		t.Fatalf("migrate up should say which database and schema it acts on (password redacted):\n%s", r.stderr)
	}

	// The environment alone is honoured too, flags before the action work.
	r = outboxBin(t, env, "migrate", "up")
	if r.code != 0 || !tableExists(t, other, "envschema", "events") {
		t.Fatalf("migrate up from the environment: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = outboxBin(t, nil, "migrate", "--database-url", named, "--schema", "shop", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "applied") {
		t.Fatalf("migrate --flags status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// migrate down rolls back the named database only, never the environment's.
	r = outboxBin(t, env, "migrate", "down-to", "0", "--database-url", named, "--schema", "shop")
	if r.code != 0 {
		t.Fatalf("migrate down-to 0: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if tableExists(t, named, "shop", "events") {
		t.Fatal("migrate down-to 0 --database-url NAMED left shop.events in the named database")
	}
	if !tableExists(t, other, "envschema", "events") {
		t.Fatal("migrate down-to 0 --database-url NAMED rolled back the environment's database")
	}
}

func TestNoSecretInHelpCheckOrErrors(t *testing.T) {
	const dbSecret, kafkaSecret = "s3cretDB", "s3cretKafka"
	env := map[string]string{
		"OUTBOX_DATABASE_URL":        "postgres://u:" + dbSecret + "@127.0.0.1:1/db",
		"OUTBOX_KAFKA_SASL_PASSWORD": kafkaSecret,
		"OUTBOX_SINK_HEADER":         "Authorization: Bearer " + kafkaSecret,
	}
	var runs []result
	walk(newRoot(&env0), func(c *cobra.Command) {
		args := append(strings.Fields(c.CommandPath())[1:], "-h")
		runs = append(runs, outboxBin(t, env, args...))
		if r := runs[len(runs)-1]; r.code != 0 {
			t.Errorf("outbox %v: exit %d, want 0\n%s", args, r.code, r.stderr)
		}
	})
	for _, stage := range [][]string{
		{"relay", "--check", "--brokers", "127.0.0.1:1"},
		{"transform", "--check", "--brokers", "127.0.0.1:1"},
		{"sink", "--check", "--brokers", "127.0.0.1:1", "--topics", "t", "--url", "http://127.0.0.1:1/"},
	} {
		r := outboxBin(t, env, stage...)
		hasDB := stage[0] != "transform"
		if r.code != 0 || !strings.Contains(r.stdout, "(set, redacted)") || hasDB != strings.Contains(r.stdout, "postgres://u:xxxxx@127.0.0.1:1/db") {
			t.Errorf("outbox %v: exit %d, want 0 and the secrets shown redacted\n%s%s", stage, r.code, r.stdout, r.stderr)
		}
		runs = append(runs, r)
	}
	// A bad value of a secret variable is named, not printed.
	runs = append(runs, outboxBin(t, map[string]string{"OUTBOX_DATABASE_URL": "postgres://u:" + dbSecret + "@h/db", "OUTBOX_SINK_HEADER": "no colon " + kafkaSecret}, "sink", "--check"))
	if r := runs[len(runs)-1]; r.code != 2 || !strings.Contains(r.stderr, "OUTBOX_SINK_HEADER") {
		t.Errorf("a malformed OUTBOX_SINK_HEADER: exit %d, want 2 naming the variable\n%s", r.code, r.stderr)
	}
	for _, r := range runs {
		for _, s := range []string{dbSecret, kafkaSecret} {
			if strings.Contains(r.stdout+r.stderr, s) {
				t.Fatalf("a secret leaked:\n%s%s", r.stdout, r.stderr)
			}
		}
	}
}

// env0 is an env for building the command tree in a test.
var env0 = env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}

func TestEnvironmentParsedLikeFlags(t *testing.T) {
	base := []string{"relay", "--check", "--database-url", "postgres://h/db", "--brokers", "127.0.0.1:1"}
	for _, tc := range []struct {
		env        map[string]string
		args       []string
		code       int
		want, from string
	}{
		{map[string]string{"OUTBOX_KAFKA_TLS": "1"}, nil, 0, "--kafka-tls true", "env OUTBOX_KAFKA_TLS"},
		{map[string]string{"OUTBOX_KAFKA_TLS": "t"}, nil, 0, "--kafka-tls true", "env OUTBOX_KAFKA_TLS"},
		{map[string]string{"OUTBOX_KAFKA_TLS": "1"}, []string{"--kafka-tls=false"}, 0, "--kafka-tls false", "flag"},
		{map[string]string{"OUTBOX_RELAY_LINGER": "5ms"}, nil, 0, "--linger 5ms", "env OUTBOX_RELAY_LINGER"},
		{map[string]string{"OUTBOX_TOPIC_TEMPLATE": "legacy.{aggregate_type}"}, nil, 0, "--topic-template legacy.{aggregate_type}", "env OUTBOX_TOPIC_TEMPLATE"},
		{map[string]string{"OUTBOX_RELAY_LINGER": "soon"}, nil, 2, "OUTBOX_RELAY_LINGER=soon", ""},
		{map[string]string{"OUTBOX_KAFKA_TLS": "yes please"}, nil, 2, "OUTBOX_KAFKA_TLS", ""},
	} {
		r := outboxBin(t, tc.env, append(append([]string{}, base...), tc.args...)...)
		got := strings.Join(strings.Fields(r.stdout), " ")
		if r.code != tc.code || !strings.Contains(got+r.stderr, tc.want) || !strings.Contains(got, tc.from) {
			t.Errorf("env %v args %v: exit %d, want %d with %q from %q\n%s%s", tc.env, tc.args, r.code, tc.code, tc.want, tc.from, r.stdout, r.stderr)
		}
	}
}

func TestUsageErrorsAreShort(t *testing.T) {
	for _, args := range [][]string{
		{"relay", "--no-such-flag"},
		{"migrate", "up", "--no-such-flag"},
		{"nope"},
		{"migrate", "sideways"},
		{"dlq", "show"},
		{"relay", "extra"},
	} {
		r := outboxBin(t, nil, args...)
		if r.code != 2 || strings.Count(r.stderr, "\n") > 2 || r.stdout != "" {
			t.Errorf("outbox %v: exit %d, want 2 and at most two lines on stderr\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := outboxBin(t, nil); r.code != 2 || !strings.Contains(r.stderr, "relay") {
		t.Errorf("outbox alone: exit %d, want 2 and the command list\n%s", r.code, r.stderr)
	}
}

func TestVersionAndCompletion(t *testing.T) {
	if r := outboxBin(t, nil, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "outbox ") || !strings.Contains(r.stdout, "go1.") {
		t.Errorf("version: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, sh := range []string{"bash", "zsh"} {
		if r := outboxBin(t, nil, "completion", sh); r.code != 0 || !strings.Contains(r.stdout, "outbox") {
			t.Errorf("completion %s: exit %d\n%s", sh, r.code, r.stderr)
		}
	}
}

func TestCLIDocsCurrent(t *testing.T) {
	var out bytes.Buffer
	e := &env{stdout: &out, stderr: &out}
	if err := writeCLIDocs(e, newRoot(e)); err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatalf("docs/cli.md: %v; generate it with `go run ./cmd/outbox docs-cli > docs/cli.md`", err)
	}
	if !bytes.Equal(have, out.Bytes()) {
		t.Fatal("docs/cli.md is stale: run `go run ./cmd/outbox docs-cli > docs/cli.md` and commit it")
	}
}

func TestBadDatabaseURLExitsFast(t *testing.T) {
	good := pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	missingDB := strings.Replace(good, "/"+cfg.Database, "/no_such_database", 1)
	refused := "postgres://u:pw@127.0.0.1:1/db"
	for _, tc := range []struct {
		name string
		url  string
		code int
		want string
	}{
		{"malformed", "postgres://u:pw@host:notaport/db", 2, "bad database URL"},
		{"refused", refused, 1, "connection refused"},
		{"missing database", missingDB, 1, "does not exist"},
	} {
		for _, args := range [][]string{
			{"relay", "--brokers", "127.0.0.1:1"},
			{"sink", "--brokers", "127.0.0.1:1", "--topics", "t", "--url", "http://127.0.0.1:1/"},
			{"migrate", "up"},
			{"doctor"},
		} {
			r := outboxBin(t, nil, append(args, "--database-url", tc.url)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.took > 10*time.Second {
				t.Errorf("%s: outbox %v: exit %d after %s, want %d within 10s saying %q\n%s", tc.name, args, r.code, r.took, tc.code, tc.want, r.stderr)
			}
			if strings.Contains(r.stderr, ":pw@") {
				t.Errorf("%s: outbox %v printed the password:\n%s", tc.name, args, r.stderr)
			}
		}
	}
}

// commandPath is how the binary names the command args run in its errors
// ("outbox dlq list").
func commandPath(t *testing.T, args []string) string {
	t.Helper()
	c, _, err := newRoot(&env0).Find(args)
	if err != nil {
		t.Fatalf("no command for %v: %v", args, err)
	}
	return c.CommandPath()
}
