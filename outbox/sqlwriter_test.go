package outbox_test

// The SQL path of migration 00003 (docs/writer.md "From any language"): the
// database applies the Go library's rules to every insert, and the key
// functions have ClaimKey's outcomes. These tests put the same input through
// both paths and require the same verdict, and run the doc's psql and Node
// examples as written.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/outbox"
)

// sqlState is the SQLSTATE of a Postgres error, or "" for none.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// insertSQL writes e with a plain INSERT, as a service in another language
// would: event_id is left to its default when e.ID is nil, and empty kind and
// content type are sent as they are.
func insertSQL(ctx context.Context, db execer, e outbox.Event) error {
	headers, err := json.Marshal(nonNilMap(e.Headers))
	if err != nil {
		return err
	}
	cols := "aggregate_type, aggregate_id, event_type, topic, fanout_topics, kind, content_type, payload, headers"
	vals := "$1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb"
	args := []any{e.AggregateType, e.AggregateID, e.EventType, e.Topic, nonNilSlice(e.FanoutTopics), string(e.Kind), e.ContentType, nonNilBytes(e.Payload), string(headers)}
	if e.ID != uuid.Nil {
		cols += ", event_id"
		vals += ", $10"
		args = append(args, e.ID)
	}
	_, err = db.Exec(ctx, "INSERT INTO outbox.events ("+cols+") VALUES ("+vals+")", args...)
	return err
}

// writeEventSQL writes e through outbox.write_event (the bytea form).
func writeEventSQL(ctx context.Context, db execer, e outbox.Event) (uuid.UUID, error) {
	headers, err := json.Marshal(nonNilMap(e.Headers))
	if err != nil {
		return uuid.Nil, err
	}
	var id *uuid.UUID
	if e.ID != uuid.Nil {
		id = &e.ID
	}
	var got uuid.UUID
	err = db.QueryRow(ctx, `SELECT outbox.write_event($1, $2, $3, $4::bytea, content_type => $5, headers => $6::jsonb,
		topic => $7, kind => $8, fanout_topics => $9::text[], event_id => $10::uuid)`,
		e.AggregateType, e.AggregateID, e.EventType, nonNilBytes(e.Payload), e.ContentType, string(headers),
		e.Topic, string(e.Kind), nonNilSlice(e.FanoutTopics), id).Scan(&got)
	return got, err
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// TestSQLPathRejectsWhatGoRejects: every invalid event the Go library refuses
// (with its default limits) is refused by the database too, through a plain
// INSERT and through write_event, with the SQLSTATE of the same rule and a
// hint saying what to do.
func TestSQLPathRejectsWhatGoRejects(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	cases := []struct {
		name string
		mod  func(*outbox.Event)
		want error
		code string
	}{
		{"uuid v4 id", func(e *outbox.Event) { e.ID = uuid.New() }, outbox.ErrInvalidEventID, "OB001"},
		{"missing aggregate type", func(e *outbox.Event) { e.AggregateType = "" }, outbox.ErrMissingAggregateType, "OB002"},
		{"blank aggregate id", func(e *outbox.Event) { e.AggregateID = " \t" }, outbox.ErrMissingAggregateID, "OB003"},
		{"unicode blank aggregate id", func(e *outbox.Event) { e.AggregateID = "\u00a0\u3000\u2007\u0085" }, outbox.ErrMissingAggregateID, "OB003"},
		{"unicode blank event type", func(e *outbox.Event) { e.EventType = "\u2028\v\u202f" }, outbox.ErrMissingEventType, "OB004"},
		{"missing event type", func(e *outbox.Event) { e.EventType = "" }, outbox.ErrMissingEventType, "OB004"},
		{"payload over 1 MiB", func(e *outbox.Event) {
			e.Payload = []byte(`"` + strings.Repeat("x", outbox.DefaultMaxPayloadBytes-1) + `"`)
		}, outbox.ErrPayloadTooLarge, "OB005"},
		{"binary payload over 1 MiB", func(e *outbox.Event) {
			e.ContentType, e.Payload = "application/octet-stream", make([]byte, outbox.DefaultMaxPayloadBytes+1)
		}, outbox.ErrPayloadTooLarge, "OB005"},
		{"invalid json", func(e *outbox.Event) { e.Payload = []byte(`{"order_id":`) }, outbox.ErrInvalidJSON, "OB006"},
		{"not json at all", func(e *outbox.Event) { e.Payload = []byte(`order A-1 created`) }, outbox.ErrInvalidJSON, "OB006"},
		{"invalid +json", func(e *outbox.Event) { e.ContentType, e.Payload = "application/cloudevents+json", []byte(`nope`) }, outbox.ErrInvalidJSON, "OB006"},
		{"json content type in capitals with parameters", func(e *outbox.Event) {
			e.ContentType, e.Payload = " Application/JSON ; charset=utf-8", []byte(`nope`)
		}, outbox.ErrInvalidJSON, "OB006"},
		{"json content type with a malformed parameter", func(e *outbox.Event) { e.ContentType, e.Payload = "application/json; charset", []byte(`nope`) }, outbox.ErrInvalidJSON, "OB006"},
		{"invalid utf-8 in json", func(e *outbox.Event) { e.Payload = []byte("{\"name\":\"\xff\"}") }, outbox.ErrInvalidJSON, "OB006"},
		{"headers over 64 KiB", func(e *outbox.Event) {
			e.Headers = map[string]string{"big": strings.Repeat("h", outbox.DefaultMaxHeaderBytes)}
		}, outbox.ErrHeadersTooLarge, "OB007"},
		{"invalid topic", func(e *outbox.Event) { e.Topic = "orders/created" }, outbox.ErrInvalidTopic, "OB008"},
		{"topic too long", func(e *outbox.Event) { e.Topic = strings.Repeat("t", 250) }, outbox.ErrInvalidTopic, "OB008"},
		{"topic dot dot", func(e *outbox.Event) { e.Topic = ".." }, outbox.ErrInvalidTopic, "OB008"},
		{"empty fan-out topic", func(e *outbox.Event) { e.FanoutTopics = []string{"audit", ""} }, outbox.ErrInvalidTopic, "OB008"},
		{"invalid kind", func(e *outbox.Event) { e.Kind = "snapshot" }, outbox.ErrInvalidKind, "OB009"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := orderCreated("A-1")
			tc.mod(&e)
			tx, err := b.pool.Begin(ctx)
			require.NoError(t, err)
			defer tx.Rollback(ctx) //nolint:errcheck
			_, err = b.writer.Write(ctx, tx, e)
			require.ErrorIs(t, err, tc.want, "Go")

			err = insertSQL(ctx, b.pool, e)
			require.Equal(t, tc.code, sqlState(err), "plain INSERT: %v", err)
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr)
			require.True(t, strings.HasPrefix(pgErr.Message, "outbox: "), pgErr.Message)
			require.NotEmpty(t, pgErr.Hint, "the error says what to do")
			require.NotEmpty(t, pgErr.ColumnName)

			_, err = writeEventSQL(ctx, b.pool, e)
			require.Equal(t, tc.code, sqlState(err), "write_event: %v", err)
		})
	}
	require.Zero(t, b.count(t, "outbox.events"))

	// What Go cannot send, the database refuses as well: headers that are not
	// an object of strings.
	_, err := b.pool.Exec(ctx, `SELECT outbox.write_event('order', 'A-1', 'order.created', '{}', headers => '["x"]')`)
	require.Equal(t, "OB010", sqlState(err), "%v", err)
	_, err = b.pool.Exec(ctx, `SELECT outbox.write_event('order', 'A-1', 'order.created', '{}', headers => '{"n": 1}')`)
	require.Equal(t, "OB010", sqlState(err), "%v", err)
}

// TestSQLPathAcceptsWhatGoAccepts: the edge cases Go lets through are let
// through by the database, and stored alike.
func TestSQLPathAcceptsWhatGoAccepts(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	cases := []struct {
		name string
		mod  func(*outbox.Event)
	}{
		{"binary payload, binary content type", func(e *outbox.Event) { e.ContentType, e.Payload = "application/x-protobuf", []byte{0xff, 0x00, 0x01} }},
		{"text that is not JSON", func(e *outbox.Event) {
			e.ContentType, e.Payload = "text/plain; charset=utf-8", []byte("order A-1 created")
		}},
		{"json-seq is not JSON", func(e *outbox.Event) { e.ContentType, e.Payload = "application/json-seq", []byte("\x1e{}\n\x1e{}\n") }},
		{"payload of exactly 1 MiB", func(e *outbox.Event) {
			e.Payload = []byte(`"` + strings.Repeat("x", outbox.DefaultMaxPayloadBytes-2) + `"`)
		}},
		{"empty binary payload", func(e *outbox.Event) { e.ContentType, e.Payload = "application/octet-stream", nil }},
		{"record kind, topic and fan-out", func(e *outbox.Event) {
			e.Kind, e.Topic, e.FanoutTopics = outbox.KindRecord, "orders.state", []string{"audit.orders", "A_b-9"}
		}},
		{"caller's UUIDv7", func(e *outbox.Event) { e.ID = uuid.Must(uuid.NewV7()) }},
		{"zero-width space is not blank", func(e *outbox.Event) { e.AggregateID = "\u200b" }},
		{"headers with a correlation id", func(e *outbox.Event) { e.Headers = map[string]string{"correlation_id": "req-1", "tenant": "acme"} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for path, write := range map[string]func(context.Context, pgx.Tx, outbox.Event) (uuid.UUID, error){
				"go": func(ctx context.Context, tx pgx.Tx, e outbox.Event) (uuid.UUID, error) {
					ids, err := b.writer.Write(ctx, tx, e)
					if err != nil {
						return uuid.Nil, err
					}
					return ids[0], nil
				},
				"write_event": func(ctx context.Context, tx pgx.Tx, e outbox.Event) (uuid.UUID, error) {
					return writeEventSQL(ctx, tx, e)
				},
				"insert": func(ctx context.Context, tx pgx.Tx, e outbox.Event) (uuid.UUID, error) {
					if err := insertSQL(ctx, tx, e); err != nil {
						return uuid.Nil, err
					}
					var id uuid.UUID
					// The transaction holds this one row.
					err := tx.QueryRow(ctx, `SELECT event_id FROM outbox.events`).Scan(&id)
					return id, err
				},
			} {
				e := orderCreated("A-1")
				tc.mod(&e)
				tx, err := b.pool.Begin(ctx)
				require.NoError(t, err)
				id, err := write(ctx, tx, e)
				require.NoError(t, err, path)
				var (
					payload                  []byte
					kind, contentType, topic string
					fanout                   []string
					headers                  map[string]string
				)
				require.NoError(t, tx.QueryRow(ctx, `SELECT payload, kind, content_type, topic, fanout_topics, headers FROM outbox.events WHERE event_id = $1`, id).
					Scan(&payload, &kind, &contentType, &topic, &fanout, &headers), path)
				require.NoError(t, tx.Rollback(ctx))
				require.Equal(t, uuid.Version(7), id.Version(), path)
				if e.ID != uuid.Nil {
					require.Equal(t, e.ID, id, path)
				}
				require.Equal(t, nonNilBytes(e.Payload), payload, path)
				require.Equal(t, orDefault(string(e.Kind), "event"), kind, path)
				require.Equal(t, orDefault(e.ContentType, "application/json"), contentType, path)
				require.Equal(t, e.Topic, topic, path)
				require.Equal(t, nonNilSlice(e.FanoutTopics), fanout, path)
				want := map[string]string{"correlation_id": id.String()}
				for k, v := range e.Headers {
					want[k] = v
				}
				require.Equal(t, want, headers, path)
			}
		})
	}
}

// TestJSONVerdictsAgree: for each payload labelled JSON, the Go check and the
// database's agree on whether it is JSON.
func TestJSONVerdictsAgree(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for payload, valid := range map[string]bool{
		`{}`: true, `[]`: true, `1`: true, `"s"`: true, `null`: true, `true`: true, " {\"a\":1}\n\t": true,
		`{"a":1,"a":2}`: true, `1e400`: true, `-0.5E-3`: true, `"\u0000"`: true, `"\ud800"`: true, `"é ☃ 𝄞"`: true,
		`{"a":[1,{"b":null}]}`: true, deep(1000): true,
		``: false, ` `: false, `{`: false, `{"a":1}x`: false, `{"a":1,}`: false, `[1,]`: false, `01`: false,
		`NaN`: false, `'a'`: false, `{a:1}`: false, `"\x"`: false, `"\u12"`: false, "\"a\x01\"": false,
		"\xef\xbb\xbf{}": false, "\"\xff\"": false, "\"\xc3\"": false, "{}\x00": false, deep(100001): false,
	} {
		e := orderCreated("A-1")
		e.Payload = []byte(payload)
		tx, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		_, goErr := b.writer.Write(ctx, tx, e)
		require.NoError(t, tx.Rollback(ctx))
		tx, err = b.pool.Begin(ctx)
		require.NoError(t, err)
		_, sqlErr := writeEventSQL(ctx, tx, e)
		require.NoError(t, tx.Rollback(ctx))
		short := payload
		if len(short) > 40 {
			short = short[:40] + "..."
		}
		if valid {
			require.NoError(t, goErr, "Go refused %q", short)
			require.NoError(t, sqlErr, "SQL refused %q", short)
		} else {
			require.ErrorIs(t, goErr, outbox.ErrInvalidJSON, "Go took %q", short)
			require.Equal(t, "OB006", sqlState(sqlErr), "SQL took %q: %v", short, sqlErr)
		}
	}
}

// TestGoWriterReportsDatabaseRejection: with Config limits above the
// database's, the Go check passes and the trigger refuses; Write and Batch.Run
// then return the same sentinel. Raising the trigger's limit lets it through.
func TestGoWriterReportsDatabaseRejection(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{MaxPayloadBytes: 4 << 20, MaxHeaderBytes: 1 << 20})
	ctx := context.Background()
	big := orderCreated("A-1")
	big.Payload = []byte(`"` + strings.Repeat("x", 2<<20) + `"`)

	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.writer.Write(ctx, tx, big)
	require.ErrorIs(t, err, outbox.ErrPayloadTooLarge)
	require.Equal(t, "OB005", sqlState(err))
	require.NoError(t, tx.Rollback(ctx))

	tx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	batch := b.writer.NewBatch()
	heavy := orderCreated("A-2")
	heavy.Headers = map[string]string{"big": strings.Repeat("h", 100<<10)}
	_, err = batch.Write(ctx, orderCreated("A-1"), heavy)
	require.NoError(t, err)
	_, err = batch.Run(ctx, tx)
	require.ErrorIs(t, err, outbox.ErrHeadersTooLarge)
	require.Equal(t, "OB007", sqlState(err))
	require.NoError(t, tx.Rollback(ctx))

	_, err = b.pool.Exec(ctx, `CREATE OR REPLACE TRIGGER events_validate BEFORE INSERT ON outbox.events
		FOR EACH ROW EXECUTE FUNCTION outbox.events_validate(4194304, 1048576)`)
	require.NoError(t, err)
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		_, err := b.writer.Write(ctx, tx, big, heavy)
		return err
	}))
	require.Equal(t, 2, b.count(t, "outbox.events"))
}

// TestSQLDefaults: what a plain INSERT gets without naming it, and uuid7().
func TestSQLDefaults(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	var (
		id                uuid.UUID
		kind, contentType string
		correlation       string
		occurredAt        time.Time
	)
	require.NoError(t, b.pool.QueryRow(ctx, `INSERT INTO outbox.events (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('order', 'A-1', 'order.created', convert_to('{"b":1,"a":2}', 'UTF8'))
		RETURNING event_id, kind, content_type, headers->>'correlation_id', occurred_at`).Scan(&id, &kind, &contentType, &correlation, &occurredAt))
	after := time.Now().Add(time.Second)
	require.Equal(t, uuid.Version(7), id.Version())
	require.Equal(t, uuid.RFC4122, id.Variant())
	sec, nsec := id.Time().UnixTime()
	require.WithinRange(t, time.Unix(sec, nsec), before, after, "the id's time is now")
	require.Equal(t, "event", kind)
	require.Equal(t, "application/json", contentType)
	require.Equal(t, id.String(), correlation)
	require.WithinRange(t, occurredAt, before, after)

	// The text form stores the JSON text byte for byte (key order kept).
	var payload []byte
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT outbox.write_event('order', 'A-1', 'order.paid', '{"b":1,"a":2}')`).Scan(&id))
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT payload FROM outbox.events WHERE event_id = $1`, id).Scan(&payload))
	require.Equal(t, `{"b":1,"a":2}`, string(payload))

	// uuid7() ids are UUIDv7 whose millisecond times never go backwards in a session.
	rows, err := b.pool.Query(ctx, `SELECT outbox.uuid7() FROM generate_series(1, 2000) ORDER BY generate_series`)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	require.NoError(t, err)
	seen := map[uuid.UUID]bool{}
	var last int64
	for _, u := range ids {
		require.Equal(t, uuid.Version(7), u.Version())
		require.Equal(t, uuid.RFC4122, u.Variant())
		ms := int64(u[0])<<40 | int64(u[1])<<32 | int64(u[2])<<24 | int64(u[3])<<16 | int64(u[4])<<8 | int64(u[5])
		require.GreaterOrEqual(t, ms, last)
		last = ms
		require.False(t, seen[u])
		seen[u] = true
	}

	// A bad id given explicitly is refused; NULL is not a default.
	_, err = b.pool.Exec(ctx, `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES (NULL, 'order', 'A-1', 'x', '\x7b7d')`)
	require.Equal(t, "23502", sqlState(err))
}

// TestSQLKeysAgreeWithGo: claim_key and complete_key share the Go library's
// key space: a claim held by either path is in flight for the other, a
// response stored by either is replayed by the other, and the errors match.
func TestSQLKeysAgreeWithGo(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	body := []byte(`{"sku":"x"}`)
	fp := outbox.Fingerprint([]byte("POST"), []byte("/orders"), body)
	sqlClaim := func(tx pgx.Tx, scope, key, fingerprint string) (string, *int32, []byte, []byte, error) {
		var (
			outcome  string
			code     *int32
			hdr, bod []byte
		)
		err := tx.QueryRow(ctx, `SELECT outcome, response_code, response_headers, response_body FROM outbox.claim_key($1, $2, $3)`, scope, key, fingerprint).
			Scan(&outcome, &code, &hdr, &bod)
		return outcome, code, hdr, bod, err
	}

	// The SQL fingerprint is outbox.Fingerprint.
	var sqlFP, sqlBytesFP string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT outbox.fingerprint('POST', '/orders', $1::text), outbox.fingerprint('POST'::bytea, '/orders', $2::bytea)`, string(body), body).Scan(&sqlFP, &sqlBytesFP))
	require.Equal(t, fp, sqlFP)
	require.Equal(t, fp, sqlBytesFP)
	for _, parts := range [][][]byte{{[]byte("ab"), []byte("c")}, {[]byte("a"), []byte("bc")}, {{}, {0xff, 0x00}}, {[]byte("é☃")}} {
		args := make([]any, len(parts))
		ph := make([]string, len(parts))
		for i, p := range parts {
			args[i], ph[i] = p, fmt.Sprintf("$%d::bytea", i+1)
		}
		var got string
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT outbox.fingerprint(`+strings.Join(ph, ", ")+`)`, args...).Scan(&got))
		require.Equal(t, outbox.Fingerprint(parts...), got)
	}

	// SQL claims; Go is told in flight while it works; Go replays what it stored.
	key := outbox.Key{Scope: "customer-7", Key: "sql-first"}
	sqlTx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	outcome, _, _, _, err := sqlClaim(sqlTx, key.Scope, key.Key, fp)
	require.NoError(t, err)
	require.Equal(t, "claimed", outcome)
	goTx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.writer.ClaimKey(ctx, goTx, key, fp)
	require.ErrorIs(t, err, outbox.ErrKeyInFlight)
	require.NoError(t, goTx.Rollback(ctx))
	_, err = sqlTx.Exec(ctx, `SELECT outbox.complete_key($1, $2, 201, $3::text, '{"Content-Type": ["application/json"], "X-Ids": ["1", "2"]}')`, key.Scope, key.Key, `{"id":"A-1"}`)
	require.NoError(t, err)
	require.NoError(t, sqlTx.Commit(ctx))
	goTx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	claim, err := b.writer.ClaimKey(ctx, goTx, key, fp)
	require.NoError(t, err)
	require.NotNil(t, claim.Replay)
	require.Equal(t, 201, claim.Replay.StatusCode)
	require.Equal(t, `{"id":"A-1"}`, string(claim.Replay.Body))
	require.Equal(t, http.Header{"Content-Type": {"application/json"}, "X-Ids": {"1", "2"}}, claim.Replay.Header)
	_, err = b.writer.ClaimKey(ctx, goTx, key, "other request")
	require.ErrorIs(t, err, outbox.ErrKeyMismatch)
	require.NoError(t, goTx.Rollback(ctx))

	// Go claims; SQL is told in flight (OB101) while it works; SQL replays what Go stored.
	key = outbox.Key{Scope: "customer-7", Key: "go-first"}
	goTx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	claim, err = b.writer.ClaimKey(ctx, goTx, key, fp)
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	sqlTx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	_, _, _, _, err = sqlClaim(sqlTx, key.Scope, key.Key, fp)
	require.Equal(t, "OB101", sqlState(err), "%v", err)
	require.NoError(t, sqlTx.Rollback(ctx))
	require.NoError(t, b.writer.CompleteKey(ctx, goTx, key, outbox.Response{StatusCode: 201, Header: http.Header{"Location": {"/orders/A-2"}}, Body: []byte{0xff, 0x01}}))
	require.NoError(t, goTx.Commit(ctx))
	sqlTx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	outcome, code, hdr, stored, err := sqlClaim(sqlTx, key.Scope, key.Key, fp)
	require.NoError(t, err)
	require.Equal(t, "replay", outcome)
	require.Equal(t, int32(201), *code)
	require.JSONEq(t, `{"Location": ["/orders/A-2"]}`, string(hdr))
	require.Equal(t, []byte{0xff, 0x01}, stored)
	require.NoError(t, sqlTx.Rollback(ctx))
	sqlTx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	_, _, _, _, err = sqlClaim(sqlTx, key.Scope, key.Key, "other request")
	require.Equal(t, "OB102", sqlState(err), "%v", err)
	require.NoError(t, sqlTx.Rollback(ctx))

	// Committed without a response: in flight on both paths.
	key = outbox.Key{Key: "never-completed"}
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		_, _, _, _, err := sqlClaim(tx, key.Scope, key.Key, fp)
		return err
	}))
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		_, err := b.writer.ClaimKey(ctx, tx, key, fp)
		require.ErrorIs(t, err, outbox.ErrKeyInFlight)
		return nil
	}))
	_, _, _, _, err = sqlClaimPool(ctx, b.pool, key.Scope, key.Key, fp)
	require.Equal(t, "OB101", sqlState(err), "%v", err)

	// Bad keys and completing an unclaimed key.
	for _, k := range []outbox.Key{{Key: ""}, {Key: strings.Repeat("k", 256)}, {Scope: strings.Repeat("s", 256), Key: "k"}} {
		require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			_, err := b.writer.ClaimKey(ctx, tx, k, fp)
			require.ErrorIs(t, err, outbox.ErrInvalidKey)
			return nil
		}))
		_, _, _, _, err = sqlClaimPool(ctx, b.pool, k.Scope, k.Key, fp)
		require.Equal(t, "OB103", sqlState(err), "%v", err)
	}
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		require.ErrorIs(t, b.writer.CompleteKey(ctx, tx, outbox.Key{Key: "unclaimed"}, outbox.Response{StatusCode: 200}), outbox.ErrKeyNotClaimed)
		return nil
	}))
	_, err = b.pool.Exec(ctx, `SELECT outbox.complete_key('', 'unclaimed', 200)`)
	require.Equal(t, "OB104", sqlState(err), "%v", err)
	_, err = b.pool.Exec(ctx, `SELECT outbox.claim_key('', 'k', 'fp', '10 milliseconds')`)
	require.Equal(t, "22023", sqlState(err), "%v", err)
	_, err = b.pool.Exec(ctx, `SELECT outbox.complete_key('', 'k', 200, response_headers => '{"a": "b"}')`)
	require.Equal(t, "22023", sqlState(err), "%v", err)

	// Keys expire on either path after their ttl and are claimable again by the other.
	short, err := outbox.New(outbox.Config{KeyTTL: time.Second})
	require.NoError(t, err)
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT outbox.claim_key('', 'sql-expiring', 'fp-1', '1 second')`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT outbox.complete_key('', 'sql-expiring', 201)`)
		return err
	}))
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := short.ClaimKey(ctx, tx, outbox.Key{Key: "go-expiring"}, "fp-1"); err != nil {
			return err
		}
		return short.CompleteKey(ctx, tx, outbox.Key{Key: "go-expiring"}, outbox.Response{StatusCode: 201})
	}))
	time.Sleep(1100 * time.Millisecond)
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		claim, err := b.writer.ClaimKey(ctx, tx, outbox.Key{Key: "sql-expiring"}, "fp-2")
		require.NoError(t, err)
		require.Nil(t, claim.Replay)
		outcome, _, _, _, err := sqlClaim(tx, "", "go-expiring", "fp-2")
		require.NoError(t, err)
		require.Equal(t, "claimed", outcome)
		return nil
	}))
}

func sqlClaimPool(ctx context.Context, pool *pgxpool.Pool, scope, key, fingerprint string) (string, *int32, []byte, []byte, error) {
	var (
		outcome  string
		code     *int32
		hdr, bod []byte
	)
	err := pool.QueryRow(ctx, `SELECT outcome, response_code, response_headers, response_body FROM outbox.claim_key($1, $2, $3)`, scope, key, fingerprint).
		Scan(&outcome, &code, &hdr, &bod)
	return outcome, code, hdr, bod, err
}

// docBlock is one fenced code block of docs/writer.md.
type docBlock struct{ lang, text string }

// fromAnyLanguageBlocks returns the code blocks of the "From any language"
// section of docs/writer.md, in order.
func fromAnyLanguageBlocks(t *testing.T) []docBlock {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "writer.md"))
	require.NoError(t, err)
	_, sec, ok := strings.Cut(string(doc), "\n## From any language\n")
	require.True(t, ok, "docs/writer.md lost its section From any language")
	sec, _, _ = strings.Cut(sec, "\n## ")
	var blocks []docBlock
	for {
		_, rest, ok := strings.Cut(sec, "\n```")
		if !ok {
			return blocks
		}
		lang, rest, _ := strings.Cut(rest, "\n")
		text, after, ok := strings.Cut(rest, "\n```\n")
		require.True(t, ok, "unterminated ```%s block", lang)
		blocks = append(blocks, docBlock{lang: lang, text: text + "\n"})
		sec = "\n" + after
	}
}

func docBlocks(t *testing.T, lang string) []string {
	t.Helper()
	var out []string
	for _, b := range fromAnyLanguageBlocks(t) {
		if b.lang == lang {
			out = append(out, b.text)
		}
	}
	return out
}

// psqlBin finds psql for the server the tests run on: in the server's own
// BINDIR (the install the pgtest harness started it from, when the test role
// may read pg_config), else beside the server binaries the harness would pick
// (OUTBOX_PG_BIN, then the packaged folders for the server's major version),
// else on PATH.
func psqlBin(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var major int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT current_setting('server_version_num')::int / 10000`).Scan(&major))
	var cands []string
	var bindir string
	if err := pool.QueryRow(context.Background(), `SELECT setting FROM pg_config WHERE name = 'BINDIR'`).Scan(&bindir); err == nil && bindir != "" {
		cands = append(cands, filepath.Join(bindir, "psql"))
	}
	if d := os.Getenv("OUTBOX_PG_BIN"); d != "" {
		cands = append(cands, filepath.Join(d, "psql"))
	}
	cands = append(cands,
		fmt.Sprintf("/usr/lib/postgresql/%d/bin/psql", major),
		fmt.Sprintf("/usr/pgsql-%d/bin/psql", major),
		fmt.Sprintf("/opt/homebrew/opt/postgresql@%d/bin/psql", major),
		fmt.Sprintf("/usr/local/opt/postgresql@%d/bin/psql", major))
	if p, err := exec.LookPath("postgres"); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(p), "psql"))
	}
	if p, err := exec.LookPath("psql"); err == nil {
		cands = append(cands, p)
	}
	for _, c := range cands {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	t.Fatalf("psql not found (looked at %v): install the Postgres client (Debian/Ubuntu: apt-get install -y postgresql-client; Fedora: dnf install -y postgresql; macOS: brew install libpq)", cands)
	return ""
}

// TestDocsFromAnyLanguagePsql runs the psql lines of docs/writer.md's "From
// any language" as written: the sh blocks must succeed, and each console
// block's commands must print the lines shown under them. Then it reads back
// what they wrote, and the Go library replays the key they completed.
func TestDocsFromAnyLanguagePsql(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	psql := psqlBin(t, b.pool)
	env := append(os.Environ(), "DATABASE_URL="+b.url, "PSQLRC=/dev/null", "PGCONNECT_TIMEOUT=10",
		"PATH="+filepath.Dir(psql)+string(os.PathListSeparator)+os.Getenv("PATH"))
	run := func(script string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-c", script)
		cmd.Env, cmd.Dir = env, t.TempDir()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	blocks := fromAnyLanguageBlocks(t)
	var sh, console int
	for _, blk := range blocks {
		switch blk.lang {
		case "sh":
			sh++
			if strings.HasPrefix(blk.text, "outbox migrate up") {
				// The preparation block: setup has migrated and made orders.
				// TestDocLines (cmd/outbox) runs it with the built binary.
				continue
			}
			out, err := run("set -euo pipefail\n" + blk.text)
			require.NoError(t, err, "%s\n%s", blk.text, out)
		case "console":
			console++
			var cmdline string
			var want []string
			check := func() {
				if cmdline == "" {
					return
				}
				out, _ := run(cmdline)
				got := strings.Split(strings.TrimRight(out, "\n"), "\n")
				i := 0
				for _, g := range got {
					if i < len(want) && strings.TrimRight(g, " ") == want[i] {
						i++
					}
				}
				require.Equal(t, len(want), i, "$ %s\nwant the lines:\n%s\ngot:\n%s", cmdline, strings.Join(want, "\n"), out)
			}
			for _, line := range strings.Split(strings.TrimRight(blk.text, "\n"), "\n") {
				if c, ok := strings.CutPrefix(line, "$ "); ok {
					check()
					cmdline, want = c, nil
					continue
				}
				want = append(want, strings.TrimRight(line, " "))
			}
			check()
		}
	}
	require.Equal(t, 3, sh, "the section's sh blocks: the preparation, the transaction, the limits")
	require.Equal(t, 1, console)

	// The transaction's order, events and key.
	var orders int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE id = 'P-1'`).Scan(&orders))
	require.Equal(t, 1, orders)
	rows, err := b.pool.Query(ctx, `SELECT event_id, event_type, payload, headers->>'correlation_id' FROM outbox.events WHERE aggregate_id = 'P-1' ORDER BY event_id`)
	require.NoError(t, err)
	type ev struct {
		id          uuid.UUID
		typ         string
		payload     []byte
		correlation string
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ev, error) {
		var e ev
		return e, r.Scan(&e.id, &e.typ, &e.payload, &e.correlation)
	})
	require.NoError(t, err)
	require.Len(t, evs, 2, "order.created and order.priced; the refused order.noted is not there")
	for i, typ := range []string{"order.created", "order.priced"} {
		require.Equal(t, typ, evs[i].typ)
		require.Equal(t, uuid.Version(7), evs[i].id.Version())
		require.Equal(t, `{"id":"P-1","amount_cents":1299}`, string(evs[i].payload))
		require.Equal(t, evs[i].id.String(), evs[i].correlation)
	}
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		claim, err := b.writer.ClaimKey(ctx, tx, outbox.Key{Scope: "customer-7", Key: "checkout-1"},
			outbox.Fingerprint([]byte("POST"), []byte("/orders"), []byte(`{"id":"P-1"}`)))
		require.NoError(t, err)
		require.NotNil(t, claim.Replay, "the Go library replays the key psql completed")
		require.Equal(t, 201, claim.Replay.StatusCode)
		require.Equal(t, `{"id":"P-1"}`, string(claim.Replay.Body))
		return nil
	}))

	// The limits block raised the payload limit to 4 MiB.
	_, err = b.pool.Exec(ctx, `SELECT outbox.write_event('order', 'P-1', 'order.big', '"' || repeat('x', 3 << 20) || '"')`)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `SELECT outbox.write_event('order', 'P-1', 'order.big', '"' || repeat('x', 5 << 20) || '"')`)
	require.Equal(t, "OB005", sqlState(err))
}

// nodePG installs node-postgres once (scripts/ensure-node-pg.sh) and returns
// its node_modules folder. Without node and npm the test fails saying what to
// install: the Node path is part of what the SQL writer promises.
func nodePG(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ensure := exec.CommandContext(ctx, "bash", filepath.Join("..", "scripts", "ensure-node-pg.sh"))
	var stderr bytes.Buffer
	ensure.Stderr = &stderr
	out, err := ensure.Output()
	require.NoError(t, err, "scripts/ensure-node-pg.sh: %s", stderr.String())
	dir := strings.TrimSpace(string(out))
	require.DirExists(t, filepath.Join(dir, "pg"))
	return dir
}

// runNode runs a Node script with node-postgres on its module path and env
// added to the environment, and returns what it printed. The script failing
// fails the test.
func runNode(t *testing.T, script string, env ...string) []byte {
	t.Helper()
	modules := nodePG(t)
	path := filepath.Join(t.TempDir(), "script.js")
	require.NoError(t, os.WriteFile(path, []byte(script), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := exec.CommandContext(ctx, "node", path)
	node.Env = append(append(os.Environ(), "NODE_PATH="+modules), env...)
	out, err := node.CombinedOutput()
	require.NoError(t, err, "node:\n%s", out)
	return out
}

// TestDocsFromAnyLanguageNode runs the Node example of docs/writer.md with
// node-postgres (scripts/ensure-node-pg.sh installs it once) and reads back
// what it wrote: the order, a write_event event and a plain INSERT event with
// UUIDv7 ids, and the completed key, which the Go library replays.
func TestDocsFromAnyLanguageNode(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	js := docBlocks(t, "js")
	require.Len(t, js, 1, "docs/writer.md has one Node example")

	out := runNode(t, js[0], "DATABASE_URL="+b.url)

	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 4, "%s", out)
	type result struct {
		Status   int    `json:"status"`
		Body     string `json:"body"`
		Replayed bool   `json:"replayed"`
	}
	var first, retry, reused result
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &retry))
	require.NoError(t, json.Unmarshal([]byte(lines[2]), &reused))
	require.Equal(t, result{Status: 201, Body: first.Body}, first)
	require.Equal(t, result{Status: 201, Body: first.Body, Replayed: true}, retry, "the retry replays the stored answer")
	require.Equal(t, 422, reused.Status, "the same key with another request")
	require.True(t, strings.HasPrefix(lines[3], "OB001 outbox: event_id 5e0f2a4c-9d47-4a41-8c7e-6f1d2b3a4c5d is a version 4 UUID"), lines[3])
	var resp struct {
		ID      string    `json:"id"`
		EventID uuid.UUID `json:"event_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(first.Body), &resp))

	var orders []string
	rows, err := b.pool.Query(ctx, `SELECT id FROM orders ORDER BY id`)
	require.NoError(t, err)
	orders, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"N-1"}, orders)

	rows, err = b.pool.Query(ctx, `SELECT event_id, event_type, content_type, kind, payload, headers FROM outbox.events ORDER BY event_id`)
	require.NoError(t, err)
	type ev struct {
		id                     uuid.UUID
		typ, contentType, kind string
		payload                []byte
		headers                map[string]string
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ev, error) {
		var e ev
		return e, r.Scan(&e.id, &e.typ, &e.contentType, &e.kind, &e.payload, &e.headers)
	})
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.Equal(t, resp.EventID, evs[0].id, "write_event returned the id it wrote")
	require.Equal(t, "order.created", evs[0].typ)
	require.Equal(t, `{"id":"N-1","amount_cents":1299}`, string(evs[0].payload))
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", evs[0].headers["traceparent"])
	require.Equal(t, "order.priced", evs[1].typ)
	require.JSONEq(t, `{"id":"N-1","amount_cents":1299}`, string(evs[1].payload))
	for _, e := range evs {
		require.Equal(t, uuid.Version(7), e.id.Version())
		require.Equal(t, "application/json", e.contentType)
		require.Equal(t, "event", e.kind)
		require.True(t, json.Valid(e.payload))
		require.Equal(t, e.id.String(), e.headers["correlation_id"])
	}

	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		claim, err := b.writer.ClaimKey(ctx, tx, outbox.Key{Scope: "customer-7", Key: "checkout-9"},
			outbox.Fingerprint([]byte("POST"), []byte("/orders"), []byte(`{"id":"N-1","amount_cents":1299}`)))
		require.NoError(t, err)
		require.NotNil(t, claim.Replay, "the Go library replays the key Node completed")
		require.Equal(t, 201, claim.Replay.StatusCode)
		require.Equal(t, first.Body, string(claim.Replay.Body))
		return nil
	}))
}

// TestWriterDoesNotLinkGoose: a service importing the writer library does not
// link the migration tooling (goose and the drivers it brings).
func TestWriterDoesNotLinkGoose(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "go test puts the go command on PATH")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "list", "-deps", "github.com/outboxrelay/outbox/outbox").CombinedOutput()
	require.NoError(t, err, "%s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/outboxrelay/outbox/internal/pgschema")
	for _, d := range deps {
		require.False(t, strings.HasPrefix(d, "github.com/pressly/goose"), "outbox links %s", d)
		require.NotEqual(t, "github.com/outboxrelay/outbox/migrations", d)
	}
}
