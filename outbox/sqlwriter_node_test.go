package outbox_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
)

// nodeChecks writes to the outbox in the schema $OUTBOX_SCHEMA through
// node-postgres, as a Node service would, and prints one JSON line per case:
// the id written, or the SQLSTATE the database answered.
const nodeChecks = `
const { Client } = require('pg');
const schema = process.env.OUTBOX_SCHEMA;

async function attempt(client, name, sql, params) {
  try {
    const { rows } = await client.query(sql, params);
    console.log(JSON.stringify({ name, row: rows[0] || null }));
  } catch (err) {
    console.log(JSON.stringify({ name, code: err.code || String(err) }));
  }
}

async function main() {
  const a = new Client({ connectionString: process.env.DATABASE_URL });
  const b = new Client({ connectionString: process.env.DATABASE_URL });
  await a.connect();
  await b.connect();
  try {
    await attempt(a, 'write_event', 'SELECT ' + schema + '.write_event($1, $2, $3, $4) AS id',
      ['order', 'J-1', 'order.created', JSON.stringify({ id: 'J-1' })]);
    await attempt(a, 'write_event bytes', 'SELECT ' + schema + ".write_event($1, $2, $3, $4::bytea, content_type => 'application/octet-stream') AS id",
      ['order', 'J-1', 'order.blob', Buffer.from([0xff, 0x00, 0x01])]);
    await attempt(a, 'insert', 'INSERT INTO ' + schema + '.events (aggregate_type, aggregate_id, event_type, payload) VALUES ($1, $2, $3, $4) RETURNING event_id AS id',
      ['order', 'J-1', 'order.priced', Buffer.from('{"id":"J-1"}')]);
    await attempt(a, 'insert v4', 'INSERT INTO ' + schema + '.events (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES ($1, $2, $3, $4, $5)',
      ['5e0f2a4c-9d47-4a41-8c7e-6f1d2b3a4c5d', 'order', 'J-1', 'order.noted', Buffer.from('{}')]);
    await attempt(a, 'write_event v4', 'SELECT ' + schema + '.write_event($1, $2, $3, $4, event_id => $5)',
      ['order', 'J-1', 'order.noted', '{}', '5e0f2a4c-9d47-4a41-8c7e-6f1d2b3a4c5d']);
    await attempt(a, 'insert not json', 'INSERT INTO ' + schema + '.events (aggregate_type, aggregate_id, event_type, content_type, payload) VALUES ($1, $2, $3, $4, $5)',
      ['order', 'J-1', 'order.noted', 'application/json; charset=utf-8', Buffer.from('order J-1 noted')]);
    await attempt(a, 'write_event not json', 'SELECT ' + schema + '.write_event($1, $2, $3, $4)',
      ['order', 'J-1', 'order.noted', '{"id":']);
    await attempt(a, 'write_event oversize', 'SELECT ' + schema + '.write_event($1, $2, $3, $4)',
      ['order', 'J-1', 'order.big', JSON.stringify('x'.repeat(1 << 20))]);
    await attempt(a, 'insert oversize', 'INSERT INTO ' + schema + '.events (aggregate_type, aggregate_id, event_type, content_type, payload) VALUES ($1, $2, $3, $4, $5)',
      ['order', 'J-1', 'order.big', 'application/octet-stream', Buffer.alloc((1 << 20) + 1)]);

    // One key claimed by two connections: in flight while a works, replayed once it commits.
    const claim = 'SELECT * FROM ' + schema + '.claim_key($1, $2, ' + schema + '.fingerprint($3, $4, $5))';
    await a.query('BEGIN');
    await attempt(a, 'claim a', claim, ['customer-7', 'node-1', 'POST', '/orders', '{"id":"J-1"}']);
    await b.query('BEGIN');
    await attempt(b, 'claim b while a works', claim, ['customer-7', 'node-1', 'POST', '/orders', '{"id":"J-1"}']);
    await b.query('ROLLBACK');
    await attempt(a, 'complete a', 'SELECT ' + schema + '.complete_key($1, $2, $3, $4) AS done', ['customer-7', 'node-1', 201, '{"id":"J-1"}']);
    await a.query('COMMIT');
    await b.query('BEGIN');
    await attempt(b, 'claim b after commit', claim, ['customer-7', 'node-1', 'POST', '/orders', '{"id":"J-1"}']);
    await b.query('ROLLBACK');
    await b.query('BEGIN');
    await attempt(b, 'claim b other request', claim, ['customer-7', 'node-1', 'POST', '/orders', '{"id":"J-2"}']);
    await b.query('ROLLBACK');
    await attempt(b, 'complete unclaimed', 'SELECT ' + schema + '.complete_key($1, $2, $3)', ['customer-7', 'node-2', 201]);
  } finally {
    await a.end();
    await b.end();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
`

// TestNodeClientWritesInNonDefaultSchema: through node-postgres, in a schema
// that is not "outbox", events written by write_event and by a plain INSERT
// get UUIDv7 ids; a v4 id, a non-JSON payload under a JSON content type and
// an oversize payload are refused with the Go sentinels' SQLSTATEs; the key
// functions answer two connections as ClaimKey does; and the Go writer
// configured for the schema replays the key Node completed.
func TestNodeClientWritesInNonDefaultSchema(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	const schema = "node_outbox"
	m, err := migrations.Open(ctx, b.url, schema, nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())

	out := runNode(t, nodeChecks, "DATABASE_URL="+b.url, "OUTBOX_SCHEMA="+schema)
	type result struct {
		Name string          `json:"name"`
		Code string          `json:"code"`
		Row  json.RawMessage `json:"row"`
	}
	got := map[string]result{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r result
		require.NoError(t, json.Unmarshal([]byte(line), &r), "%s", out)
		got[r.Name] = r
	}
	require.Len(t, got, 15, "%s", out)

	for _, name := range []string{"write_event", "write_event bytes", "insert"} {
		r := got[name]
		require.Empty(t, r.Code, name)
		var row struct {
			ID uuid.UUID `json:"id"`
		}
		require.NoError(t, json.Unmarshal(r.Row, &row), name)
		require.Equal(t, uuid.Version(7), row.ID.Version(), name)
	}
	for name, code := range map[string]string{
		"insert v4": "OB001", "write_event v4": "OB001",
		"insert not json": "OB006", "write_event not json": "OB006",
		"write_event oversize": "OB005", "insert oversize": "OB005",
		"claim b while a works": "OB101", "claim b other request": "OB102", "complete unclaimed": "OB104",
	} {
		require.Equal(t, code, got[name].Code, "%s: %s", name, got[name].Row)
	}
	require.JSONEq(t, `{"outcome":"claimed","response_code":null,"response_headers":null,"response_body":null}`, string(got["claim a"].Row))
	require.Empty(t, got["complete a"].Code)
	var replay struct {
		Outcome      string `json:"outcome"`
		ResponseCode int    `json:"response_code"`
		ResponseBody struct {
			Type string `json:"type"`
			Data []int  `json:"data"`
		} `json:"response_body"`
	}
	require.NoError(t, json.Unmarshal(got["claim b after commit"].Row, &replay))
	require.Equal(t, "replay", replay.Outcome)
	require.Equal(t, 201, replay.ResponseCode)
	require.Equal(t, "Buffer", replay.ResponseBody.Type)
	body := make([]byte, len(replay.ResponseBody.Data))
	for i, c := range replay.ResponseBody.Data {
		body[i] = byte(c)
	}
	require.Equal(t, `{"id":"J-1"}`, string(body))

	// What Node wrote is in its schema only, as the Go writer would have written it.
	require.Equal(t, 3, b.count(t, schema+".events"))
	require.Zero(t, b.count(t, "outbox.events"))
	var payload []byte
	var contentType, kind, correlation string
	var eventID uuid.UUID
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT event_id, payload, content_type, kind, headers->>'correlation_id' FROM node_outbox.events WHERE event_type = 'order.created'`).
		Scan(&eventID, &payload, &contentType, &kind, &correlation))
	require.Equal(t, `{"id":"J-1"}`, string(payload))
	require.Equal(t, "application/json", contentType)
	require.Equal(t, "event", kind)
	require.Equal(t, eventID.String(), correlation)
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT payload FROM node_outbox.events WHERE event_type = 'order.blob'`).Scan(&payload))
	require.Equal(t, []byte{0xff, 0x00, 0x01}, payload, "a Buffer is stored byte for byte")

	w, err := outbox.New(outbox.Config{Schema: schema})
	require.NoError(t, err)
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	claim, err := w.ClaimKey(ctx, tx, outbox.Key{Scope: "customer-7", Key: "node-1"},
		outbox.Fingerprint([]byte("POST"), []byte("/orders"), []byte(`{"id":"J-1"}`)))
	require.NoError(t, err)
	require.NotNil(t, claim.Replay, "the Go writer replays the key Node completed")
	require.Equal(t, 201, claim.Replay.StatusCode)
	require.Equal(t, `{"id":"J-1"}`, string(claim.Replay.Body))
}
