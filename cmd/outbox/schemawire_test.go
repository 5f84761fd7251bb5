package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/testkit/registrytest"
	"github.com/outboxrelay/outbox/relay"
)

// pyConfluent is the python of scripts/ensure-pyconfluent.sh's virtualenv,
// installing it on first use.
func pyConfluent(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("bash", "../../scripts/ensure-pyconfluent.sh").Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "this test needs Confluent's Python client: %s", stderr)
	return strings.TrimSpace(string(out))
}

// TestSchemaWireJavaFormat: the deploy step registers the schemas folder,
// a relay with --schema-registry writes order events in the Confluent wire
// format (magic byte 0, the latest version's id, then the Avro datum or the
// JSON text), and Confluent's own deserializers (confluent-kafka's
// AvroDeserializer and JSONDeserializer, reading read_committed through
// librdkafka: what KafkaAvroDeserializer and KafkaJsonSchemaDeserializer
// do in Java) decode each to the payload the service wrote. An event type
// without a schema goes as written; an event from the SQL path that does
// not match goes to the schema dead-letter topic with the reason, and the
// relay goes on. The sink decodes transparently: the API receives the JSON
// the service wrote.
func TestSchemaWireJavaFormat(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"avro", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			schemaWireRoundTrip(t, format)
		})
	}
}

func schemaWireRoundTrip(t *testing.T, format string) {
	b, _ := setupOps(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	regURL := registrytest.URL(t)
	py := pyConfluent(t)
	url := migratedDatabase(ctx, t)

	// The repository's order.created history under a name of the test's own
	// (the registry is shared by the test binary).
	etype := "order.created." + b.prefix
	dir := filepath.Join(b.dir, "schemas")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, etype), 0o755))
	src, err := filepath.Glob("../../schemas/order.created/v*")
	require.NoError(t, err)
	require.NotEmpty(t, src)
	for _, f := range src {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, etype, filepath.Base(f)), data, 0o644))
	}
	r := outboxBin(t, nil, "schema", "register", "--registry", regURL, "--dir", dir)
	require.Zero(t, r.code, r.stderr)
	require.Regexp(t, etype+` v2 \(AVRO\) +subject `+etype+` version 2 id [0-9]+`, r.stdout)
	require.Regexp(t, etype+` v1 \(JSON\) +subject `+etype+`-json version 1 id [0-9]+`, r.stdout)
	// The version the relay writes with: the latest in the format.
	latest, schemaType := etype+" v2 (AVRO)", "AVRO"
	if format == "json" {
		latest, schemaType = etype+" v1 (JSON)", "JSON"
	}
	var wantID int
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, latest) {
			_, err := fmt.Sscanf(l[strings.LastIndex(l, " id ")+4:], "%d", &wantID)
			require.NoError(t, err)
		}
	}
	require.NotZero(t, wantID, r.stdout)

	slot := fmt.Sprintf("wire_%d_%s", os.Getpid(), b.prefix)
	topic, dlt := b.prefix+".orders", b.prefix+".schema-dlt"
	b.k.CreateTopic(topic, 2, nil)
	b.k.CreateTopic(dlt, 1, nil)
	relayStage := startStage(t, nil, "relay", "--database-url", url, "--brokers", strings.Join(b.k.Brokers, ","), "--slot", slot,
		"--checkpoint-topic", b.prefix+".ckpt", "--transactional-id", "outbox-relay-"+slot,
		"--schema-registry", regURL, "--schemas-dir", dir, "--value-format", format, "--schema-dead-letter", dlt)

	// Payloads as the service writes them: plain JSON, the optional items
	// present or left out (Avro's default, null, fills it in).
	const orders = 12
	want := map[string]map[string]any{}
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	waitSlotActive(ctx, t, conn, relayStage, slot)
	insert := func(id, eventType, payload string) {
		t.Helper()
		_, err := conn.Exec(ctx, `INSERT INTO outbox.events (aggregate_type, aggregate_id, event_type, topic, payload)
			VALUES ('order', $1, $2, $3, $4)`, id, eventType, topic, []byte(payload))
		require.NoError(t, err)
	}
	for i := range orders {
		id := fmt.Sprintf("o-%02d", i)
		p := map[string]any{"order_id": id, "customer_id": "c-1", "amount_cents": 1000 + i, "currency": "EUR", "items": nil}
		if i%2 == 0 {
			p["items"] = []any{map[string]any{"sku": "sku-" + id, "quantity": i + 1}}
		}
		text, err := json.Marshal(p)
		require.NoError(t, err)
		if i%3 == 0 || (format == "json" && p["items"] == nil) {
			delete(p, "items") // written without it
			text, _ = json.Marshal(p)
			if format == "avro" {
				p["items"] = nil // read with the default
			}
		}
		insert(id, etype, string(text))
		want[id] = roundTrip(t, p)
	}
	// The SQL path: no writer validated these.
	insert("o-bad", etype, `{"order_id":"o-bad","customer_id":"c-1","amount_cents":"12.50","currency":"EUR"}`)
	insert("o-note", "order.noted", `{"note":"no schema for this type"}`)

	eventually(t, 2*time.Minute, "every event in Kafka", func() error {
		relayStage.running(t)
		recs, err := b.k.ReadCommitted(ctx, topic, dlt)
		if err != nil {
			return err
		}
		if len(recs) != orders+2 {
			return fmt.Errorf("%d records of %d", len(recs), orders+2)
		}
		return nil
	})
	recs, err := b.k.ReadCommitted(ctx, topic, dlt)
	require.NoError(t, err)
	for _, rec := range recs {
		switch {
		case rec.Topic == dlt:
			require.Equal(t, "o-bad", string(rec.Key))
			require.Contains(t, string(headerValue(rec.Headers, relay.HeaderSchemaError)), "amount_cents")
			require.JSONEq(t, `{"order_id":"o-bad","customer_id":"c-1","amount_cents":"12.50","currency":"EUR"}`, string(rec.Value), "a dead letter carries the payload as written")
		case string(rec.Key) == "o-note":
			require.JSONEq(t, `{"note":"no schema for this type"}`, string(rec.Value))
		default:
			require.Equal(t, byte(0), rec.Value[0], "magic byte")
			require.Equal(t, uint32(wantID), binary.BigEndian.Uint32(rec.Value[1:5]), "the latest version's id")
		}
	}

	// Confluent's deserializer, read_committed.
	cmd := exec.CommandContext(ctx, py, "../../scripts/confluent/read.py", "--brokers", strings.Join(b.k.Brokers, ","),
		"--registry", regURL, "--topic", topic)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "read.py: %s", stderr.String())
	got := map[string]map[string]any{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Key        string         `json:"key"`
			SchemaID   *int           `json:"schema_id"`
			SchemaType string         `json:"schema_type"`
			Value      map[string]any `json:"value"`
			Raw        string         `json:"raw"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), sc.Text())
		if line.Key == "o-note" {
			require.Nil(t, line.SchemaID)
			require.JSONEq(t, `{"note":"no schema for this type"}`, line.Raw)
			continue
		}
		require.NotNil(t, line.SchemaID, sc.Text())
		require.Equal(t, wantID, *line.SchemaID)
		require.Equal(t, schemaType, line.SchemaType)
		got[line.Key] = line.Value
	}
	require.Equal(t, want, got, "Confluent's deserializer reads every order as written")
	t.Logf("confluent-kafka's %s deserializer decoded %d records of schema id %d, read_committed", schemaType, len(got), wantID)

	// The sink decodes before it builds the request.
	var mu sync.Mutex
	bodies := map[string]map[string]any{}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		var v map[string]any
		if err := json.Unmarshal(data, &v); err != nil {
			http.Error(w, "not JSON: "+string(data), http.StatusBadRequest)
			return
		}
		mu.Lock()
		bodies[r.URL.Query().Get("order")] = v
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer api.Close()
	sinkStage := startStage(t, nil, "sink", "run", "--database-url", url, "--brokers", strings.Join(b.k.Brokers, ","),
		"--group", b.prefix+".sink", "--topics", topic, "--url", api.URL+"/charges?order={{.AggregateID}}",
		"--schema-registry", regURL, "--retries", "-1")
	eventually(t, 2*time.Minute, "the sink called the API for every event", func() error {
		sinkStage.running(t)
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) != orders+1 {
			return fmt.Errorf("%d calls of %d", len(bodies), orders+1)
		}
		return nil
	})
	sinkStage.stop(t, 30*time.Second)
	relayStage.stop(t, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]any{"note": "no schema for this type"}, bodies["o-note"])
	delete(bodies, "o-note")
	require.Equal(t, want, bodies, "the API receives the JSON the service wrote")
}

// roundTrip is v as JSON decodes it (numbers float64).
func roundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// headerValue is the last value of header key, nil without one.
func headerValue(hs []kgo.RecordHeader, key string) []byte {
	var v []byte
	for _, h := range hs {
		if h.Key == key {
			v = h.Value
		}
	}
	return v
}
