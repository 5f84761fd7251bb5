package outbox_test

// Migration 00004 gave the events_validate trigger a fast path. These tests
// hold it to 00003's function: the same rows accepted with the same result,
// the same rows refused with the same error, for rows at every edge of the
// fast path's expression.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
)

// validate00003 is events_validate as migration 00003 created it, renamed.
func validate00003(t *testing.T) string {
	t.Helper()
	raw, err := fs.ReadFile(migrations.FS, "00003_sql_writer.sql")
	require.NoError(t, err)
	src := string(raw)
	start := strings.Index(src, "CREATE FUNCTION events_validate() RETURNS trigger")
	require.GreaterOrEqual(t, start, 0)
	end := strings.Index(src[start:], "\n$$;\n")
	require.Greater(t, end, 0)
	return strings.Replace(src[start:start+end+len("\n$$;")], "CREATE FUNCTION events_validate()", "CREATE FUNCTION public.events_validate_00003()", 1)
}

// TestFastTriggerAgreesWith00003: every row, inserted into a table with the
// 00003 trigger and into one with the current trigger (limits 1024 and 256
// bytes), gets the same stored row or the same error.
func TestFastTriggerAgreesWith00003(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, validate00003(t))
	require.NoError(t, err)
	for _, ddl := range []string{
		`CREATE TABLE v_old (LIKE outbox.events INCLUDING DEFAULTS)`,
		`CREATE TABLE v_new (LIKE outbox.events INCLUDING DEFAULTS)`,
		`CREATE TRIGGER v BEFORE INSERT ON v_old FOR EACH ROW EXECUTE FUNCTION public.events_validate_00003(1024, 256)`,
		`CREATE TRIGGER v BEFORE INSERT ON v_new FOR EACH ROW EXECUTE FUNCTION outbox.events_validate(1024, 256)`,
	} {
		_, err := conn.Exec(ctx, ddl)
		require.NoError(t, err, ddl)
	}

	base := map[string]string{
		"event_id":       `'0190f0c0-0000-7000-8000-000000000041'`,
		"aggregate_type": `'order'`,
		"aggregate_id":   `'A-1'`,
		"event_type":     `'order.created'`,
		"topic":          `''`,
		"fanout_topics":  `'{}'`,
		"kind":           `'event'`,
		"content_type":   `'application/json'`,
		"payload":        `convert_to('{"a":1}', 'UTF8')`,
		"headers":        `'{"correlation_id":"c"}'`,
		"occurred_at":    `'2026-01-02T03:04:05Z'`,
		"created_at":     `'2026-01-02T03:04:06Z'`,
	}
	// jsonString is a payload of exactly n bytes: a JSON string.
	jsonString := func(n int) string { return fmt.Sprintf(`convert_to('"' || repeat('x', %d) || '"', 'UTF8')`, n-2) }
	// headersOf is correlation_id "c" plus k with a value of n bytes of x.
	headersOf := func(n int) string {
		return fmt.Sprintf(`jsonb_build_object('correlation_id', 'c', 'k', repeat('x', %d))`, n)
	}
	variants := map[string][]string{
		"event_id":       {`'5e0f2a4c-9d47-4a41-8c7e-6f1d2b3a4c5d'`, `NULL`},
		"aggregate_type": {`''`, `' '`, `' order'`, `E'\t'`, `chr(160)`, `chr(160) || 'x'`, `'ö'`, `chr(12288)`, `'~'`, `'!'`, `NULL`},
		"aggregate_id":   {`''`, `'  '`, `' x'`, `chr(127)`, `NULL`},
		"event_type":     {`''`, `'e'`, `chr(133)`, `NULL`},
		"kind":           {`''`, `'record'`, `'x'`, `'EVENT'`, `NULL`},
		"topic": {`'orders.v1'`, `'.'`, `'..'`, `'a/b'`, `repeat('a', 249)`, `repeat('a', 250)`, `NULL`, `'ö'`, `' '`,
			`'a_b-c.d'`, `'...'`},
		"fanout_topics": {`'{a}'`, `'{""}'`, `'{NULL}'`, `NULL`, `'{a,b/c}'`, `ARRAY[repeat('b', 250)]`, `'{a.b,c}'`},
		"content_type": {`''`, `'application/JSON'`, `' application/json'`, `'application/json; charset=utf-8'`,
			`'text/plain'`, `'application/cloudevents+json'`, `'application/octet-stream'`, `NULL`},
		"payload": {jsonString(1024), jsonString(1025), `'\xff'::bytea`, `convert_to('{"a":', 'UTF8')`, `''::bytea`,
			`NULL`, `convert_to('[1,2]', 'UTF8')`, `convert_to(repeat('[', 5000), 'UTF8')`},
		"headers": {`'{}'`, `'{"correlation_id":""}'`, `'{"correlation_id":null}'`, `'{"a":1,"correlation_id":"c"}'`,
			`'{"a":["x"],"correlation_id":"c"}'`, `'{"a":{"b":"c"},"correlation_id":"c"}'`, `'{"a":true,"correlation_id":"c"}'`,
			`'{"a":null,"correlation_id":"c"}'`, `'[]'`, `'"x"'`, `'null'`, `NULL`,
			// Around the 256-byte limit of keys plus values (correlation_id+c is 15, k is 1).
			headersOf(240), headersOf(241), headersOf(200),
			// JSON text over 256 bytes whose keys and values are fewer: escapes.
			`jsonb_build_object('correlation_id', 'c', 'k', repeat(chr(1), 100))`,
			`jsonb_build_object('correlation_id', 'c', 'k', repeat(chr(1), 240))`,
			`jsonb_build_object('correlation_id', 'c', 'k', repeat('é', 120))`,
			`jsonb_build_object('k', repeat('x', 250))`},
	}
	type row map[string]string
	with := func(over ...string) row {
		r := row{}
		for k, v := range base {
			r[k] = v
		}
		for i := 0; i+1 < len(over); i += 2 {
			r[over[i]] = over[i+1]
		}
		return r
	}
	rows := []row{with()}
	cols := make([]string, 0, len(variants))
	for c := range variants {
		cols = append(cols, c)
	}
	sort.Strings(cols)
	for _, c := range cols {
		for _, v := range variants[c] {
			rows = append(rows, with(c, v))
		}
	}
	// Several problems at once: the first check in 00003's order wins.
	rows = append(rows,
		with("aggregate_type", `''`, "kind", `'x'`),
		with("kind", `'x'`, "topic", `'a/b'`),
		with("payload", `convert_to('{', 'UTF8')`, "headers", `'[]'`),
		with("payload", jsonString(2000), "content_type", `'text/plain'`),
		with("content_type", `''`, "payload", `convert_to('{', 'UTF8')`),
		with("headers", `'{}'`, "event_id", `'0190f0c0-0000-7000-8000-000000000042'`),
	)

	insert := func(table string, r row) string {
		names := make([]string, 0, len(r))
		for c := range r {
			names = append(names, c)
		}
		sort.Strings(names)
		values := make([]string, len(names))
		for i, c := range names {
			values[i] = r[c]
		}
		var out string
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, fmt.Sprintf(`INSERT INTO %s (%s) VALUES (%s) RETURNING row_to_json(x.*)::text`,
				table+" AS x", strings.Join(names, ", "), strings.Join(values, ", "))).Scan(&out)
		})
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr):
			// Only the table's name may differ (NOT NULL errors name it).
			return strings.ReplaceAll(fmt.Sprintf("error %s column=%s: %s | %s | %s", pgErr.Code, pgErr.ColumnName, pgErr.Message, pgErr.Detail, pgErr.Hint), table, "TABLE")
		case err != nil:
			t.Fatalf("insert into %s: %v", table, err)
		}
		return "stored " + out
	}
	var stored, refused int
	for _, r := range rows {
		old, cur := insert("v_old", r), insert("v_new", r)
		require.Equal(t, old, cur, "row %v", r)
		if strings.HasPrefix(cur, "stored ") {
			stored++
		} else {
			refused++
		}
	}
	require.Greater(t, stored, 15, "rows accepted")
	require.Greater(t, refused, 30, "rows refused")
}
