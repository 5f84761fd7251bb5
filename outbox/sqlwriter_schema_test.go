package outbox_test

// The SQL path of migration 00003 in a schema other than "outbox", and the
// rows it writes as the relay reads them: pgoutput tuples of the publication.

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
)

// TestSQLWriterInNonDefaultSchema: migrated into a schema of another name,
// beside the default one in the same database, write_event, the defaults, the
// trigger and the key functions work, and whatever the caller's search_path,
// they use their own schema's tables.
func TestSQLWriterInNonDefaultSchema(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{}) // migrates "outbox"
	ctx := context.Background()
	const schema = "shop_outbox"
	m, err := migrations.Open(ctx, b.url, schema, nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	w, err := outbox.New(outbox.Config{Schema: schema})
	require.NoError(t, err)

	conn, err := pgx.Connect(ctx, b.url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	// A decoy events table first on the caller's search_path, then the other schema.
	_, err = conn.Exec(ctx, `CREATE TABLE public.events (LIKE outbox.events INCLUDING DEFAULTS)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `SET search_path = public, outbox`)
	require.NoError(t, err)

	var viaFunc, viaInsert uuid.UUID
	require.NoError(t, conn.QueryRow(ctx, `SELECT shop_outbox.write_event('order', 'S-1', 'order.created', '{"id":"S-1"}')`).Scan(&viaFunc))
	require.NoError(t, conn.QueryRow(ctx, `INSERT INTO shop_outbox.events (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('order', 'S-1', 'order.priced', convert_to('{"id":"S-1"}', 'UTF8')) RETURNING event_id`).Scan(&viaInsert))
	for _, id := range []uuid.UUID{viaFunc, viaInsert} {
		require.Equal(t, uuid.Version(7), id.Version())
		var correlation string
		require.NoError(t, conn.QueryRow(ctx, `SELECT headers->>'correlation_id' FROM shop_outbox.events WHERE event_id = $1`, id).Scan(&correlation))
		require.Equal(t, id.String(), correlation)
	}
	require.Equal(t, 2, b.count(t, schema+".events"))
	require.Zero(t, b.count(t, "public.events"), "the decoy first on search_path")
	require.Zero(t, b.count(t, "outbox.events"), "the other outbox schema")

	_, err = conn.Exec(ctx, `INSERT INTO shop_outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload)
		VALUES ($1, 'order', 'S-1', 'order.noted', '\x7b7d')`, uuid.New())
	require.Equal(t, "OB001", sqlState(err), "%v", err)
	_, err = conn.Exec(ctx, `SELECT shop_outbox.write_event('order', 'S-1', 'order.noted', 'not json')`)
	require.Equal(t, "OB006", sqlState(err), "%v", err)
	_, err = conn.Exec(ctx, `SELECT shop_outbox.write_event('order', 'S-1', 'order.noted', '"' || repeat('x', 1 << 20) || '"')`)
	require.Equal(t, "OB005", sqlState(err), "%v", err)

	// Keys claimed and completed in SQL land in this schema's table, and the
	// Go writer configured for the schema replays them.
	fp := outbox.Fingerprint([]byte("POST"), []byte("/orders"), []byte(`{"id":"S-1"}`))
	require.NoError(t, pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var outcome string
		if err := tx.QueryRow(ctx, `SELECT outcome FROM shop_outbox.claim_key('c-1', 'k-1', shop_outbox.fingerprint('POST', '/orders', '{"id":"S-1"}'))`).Scan(&outcome); err != nil {
			return err
		}
		require.Equal(t, "claimed", outcome)
		_, err := tx.Exec(ctx, `SELECT shop_outbox.complete_key('c-1', 'k-1', 201, '{"id":"S-1"}')`)
		return err
	}))
	require.Equal(t, 1, b.count(t, schema+".idempotency_keys"))
	require.Zero(t, b.count(t, "outbox.idempotency_keys"))
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		claim, err := w.ClaimKey(ctx, tx, outbox.Key{Scope: "c-1", Key: "k-1"}, fp)
		require.NoError(t, err)
		require.NotNil(t, claim.Replay)
		require.Equal(t, 201, claim.Replay.StatusCode)
		require.Equal(t, `{"id":"S-1"}`, string(claim.Replay.Body))
		// The default schema knows nothing of the key.
		claim, err = b.writer.ClaimKey(ctx, tx, outbox.Key{Scope: "c-1", Key: "k-1"}, "another request")
		require.NoError(t, err)
		require.Nil(t, claim.Replay)
		return nil
	}))
}

// TestSQLEventsLookLikeGoEventsToTheRelay: the same event written by the Go
// writer, by write_event and by a plain INSERT reaches the relay's
// publication as the same pgoutput tuple, column for column and byte for byte
// (binary format, as the relay streams it), but for the event id, the
// correlation id it defaults to and created_at. With only the required
// fields, the defaults agree too.
func TestSQLEventsLookLikeGoEventsToTheRelay(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	slot := fmt.Sprintf("shape_%d", time.Now().UnixNano())
	_, err = conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput', true)`, slot)
	require.NoError(t, err, "a temporary slot (the pgtest cluster runs with wal_level=logical)")

	occurred := time.Date(2026, 3, 1, 12, 30, 0, 123456000, time.UTC)
	full := outbox.Event{
		AggregateType: "order", AggregateID: "R-1", EventType: "order.created",
		Topic: "orders.v1", FanoutTopics: []string{"audit.orders", "billing"}, Kind: outbox.KindRecord,
		ContentType: "application/cloudevents+json", Payload: []byte(`{"id":"R-1","amount_cents":1299}`),
		Headers:    map[string]string{"tenant": "acme", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		OccurredAt: occurred,
	}
	minimal := outbox.Event{AggregateType: "order", AggregateID: "R-2", EventType: "order.paid", Payload: []byte(`{"id":"R-2"}`)}
	hdr, err := json.Marshal(full.Headers)
	require.NoError(t, err)

	// Each write its own transaction, in this order.
	writes := []func(tx pgx.Tx) error{
		func(tx pgx.Tx) error { _, err := b.writer.Write(ctx, tx, full); return err },
		func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT outbox.write_event($1, $2, $3, $4::text, content_type => $5, headers => $6::jsonb,
				topic => $7, kind => $8, fanout_topics => $9::text[], occurred_at => $10)`,
				full.AggregateType, full.AggregateID, full.EventType, string(full.Payload), full.ContentType, string(hdr),
				full.Topic, string(full.Kind), full.FanoutTopics, occurred)
			return err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO outbox.events (aggregate_type, aggregate_id, event_type, topic, fanout_topics, kind, content_type, payload, headers, occurred_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)`,
				full.AggregateType, full.AggregateID, full.EventType, full.Topic, full.FanoutTopics, string(full.Kind), full.ContentType,
				full.Payload, string(hdr), occurred)
			return err
		},
		func(tx pgx.Tx) error { _, err := b.writer.Write(ctx, tx, minimal); return err },
		func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT outbox.write_event('order', 'R-2', 'order.paid', '{"id":"R-2"}')`)
			return err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO outbox.events (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', 'R-2', 'order.paid', '\x7b226964223a22522d32227d')`)
			return err
		},
	}
	for i, write := range writes {
		require.NoError(t, pgx.BeginFunc(ctx, b.pool, write), "write %d", i)
	}

	rows, err := conn.Query(ctx, `SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2, 'binary', 'true')`, slot, migrations.PublicationName("outbox"))
	require.NoError(t, err)
	msgs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	require.NoError(t, err)
	rels := map[uint32]*pglogrepl.RelationMessage{}
	var tuples []map[string][]byte
	var names []string
	for _, data := range msgs {
		msg, err := pglogrepl.Parse(data)
		require.NoError(t, err)
		switch msg := msg.(type) {
		case *pglogrepl.RelationMessage:
			rels[msg.RelationID] = msg
		case *pglogrepl.InsertMessage:
			rel := rels[msg.RelationID]
			require.NotNil(t, rel, "relation before its first row")
			require.Equal(t, "outbox", rel.Namespace)
			require.Equal(t, "events", rel.RelationName, "published as the partition root")
			row := map[string][]byte{}
			var cols []string
			for i, c := range msg.Tuple.Columns {
				require.Equal(t, uint8(pglogrepl.TupleDataTypeBinary), c.DataType, "column %s", rel.Columns[i].Name)
				row[rel.Columns[i].Name] = c.Data
				cols = append(cols, rel.Columns[i].Name)
			}
			if names == nil {
				names = cols
			}
			require.Equal(t, names, cols)
			tuples = append(tuples, row)
		}
	}
	require.Len(t, tuples, len(writes))

	// headers decodes a jsonb column in binary form (a version byte, then the text).
	headers := func(b []byte) map[string]string {
		require.Equal(t, byte(1), b[0])
		var h map[string]string
		require.NoError(t, json.Unmarshal(b[1:], &h))
		return h
	}
	for i, row := range tuples {
		id, err := uuid.FromBytes(row["event_id"])
		require.NoError(t, err)
		require.Equal(t, uuid.Version(7), id.Version(), "row %d", i)
		h := headers(row["headers"])
		require.Equal(t, id.String(), h["correlation_id"], "row %d: a write starts a correlation", i)
		delete(h, "correlation_id")
		if i < 3 {
			require.Equal(t, full.Headers, h, "row %d", i)
		} else {
			require.Empty(t, h, "row %d", i)
		}
	}
	for _, group := range []struct {
		rows []map[string][]byte
		skip map[string]bool
	}{
		{tuples[:3], map[string]bool{"event_id": true, "headers": true, "created_at": true}},
		// occurred_at defaults to now() on one path, the Go clock on the other.
		{tuples[3:], map[string]bool{"event_id": true, "headers": true, "created_at": true, "occurred_at": true}},
	} {
		goRow := group.rows[0]
		for i, row := range group.rows[1:] {
			for _, col := range names {
				if !group.skip[col] {
					require.Equal(t, goRow[col], row[col], "column %s of SQL row %d (of %s) differs from the Go row", col, i+1, goRow["aggregate_id"])
				}
			}
		}
	}
	var goOccurred time.Time
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT occurred_at FROM outbox.events WHERE aggregate_id = 'R-1' LIMIT 1`).Scan(&goOccurred))
	require.True(t, occurred.Equal(goOccurred))
}
