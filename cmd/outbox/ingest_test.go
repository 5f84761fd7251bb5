package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
)

// ingestSecret is the Stripe test source's signing secret, read by the
// ingest child from the variable its config file names.
const ingestSecret = "whsec_relay_order_test"

// stripeSigned returns body's Stripe-Signature header signed now.
func stripeSigned(body []byte) string {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	m := hmac.New(sha256.New, []byte(ingestSecret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// postWebhook sends body to `outbox ingest` at base and returns the status.
// It does not fail the test itself: senders run on their own goroutines.
func postWebhook(base, source string, body []byte) (int, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+base+"/webhooks/"+source, strings.NewReader(string(body)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", stripeSigned(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// metricValue reads one sample of a Prometheus text page ("" labels: the
// exact label set as printed, e.g. `outcome="accepted",source="stripe"`).
func metricValue(t *testing.T, addr, name, labels string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+"{"+labels+"}") + ` (\d+)$`).FindSubmatch(page)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	return n
}

// TestIngestRelayOrder runs the real binary end to end: `outbox ingest`
// receives out-of-order and repeated Stripe deliveries of several entities
// from 8 concurrent senders, and `outbox relay` streams what it committed to
// Kafka. Read read_committed, the compacted records topic holds, per key,
// versions strictly increasing by offset and ending at the newest; the raw
// topic holds each distinct delivery exactly once; webhook_entities holds the
// newest version of each entity; the metrics count every repeat as a
// duplicate. Both processes then stop cleanly on SIGTERM.
func TestIngestRelayOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := kafkatest.New(t)
	url := migratedDatabase(ctx, t)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(context.Background())

	prefix := fmt.Sprintf("ing%08x", rand.Uint32())
	raw, records, events := prefix+".raw", prefix+".records", prefix+".events"
	k.CreateTopic(raw, 1, nil)
	k.CreateTopic(records, 3, map[string]string{"cleanup.policy": "compact"})
	k.CreateTopic(events, 1, nil)
	cfgFile := filepath.Join(t.TempDir(), "ingest.yaml")
	require.NoError(t, os.WriteFile(cfgFile, fmt.Appendf(nil, `sources:
  stripe:
    preset: stripe
    secret_env: [TEST_STRIPE_WEBHOOK_SECRET]
    topics: {raw: %s, records: %s, events: %s}
`, raw, records, events), 0o600))

	listen, opsAddr := freeAddr(t), freeAddr(t)
	ing := startStage(t, map[string]string{"TEST_STRIPE_WEBHOOK_SECRET": ingestSecret},
		"ingest", "--database-url", url, "--config", cfgFile, "--listen", listen, "--metrics-addr", opsAddr)
	slot := fmt.Sprintf("ingest_%d_%s", os.Getpid(), prefix)
	rel := startStage(t, nil, "relay", "--database-url", url, "--brokers", strings.Join(k.Brokers, ","), "--slot", slot,
		"--checkpoint-topic", prefix+".ckpt", "--transactional-id", "outbox-relay-"+slot, "--heartbeat", "1s")
	eventually(t, time.Minute, "ingest ready", func() error {
		ing.running(t)
		resp, err := http.Get("http://" + opsAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz %d", resp.StatusCode)
		}
		return nil
	})
	// Rows committed before the slot exists are not streamed: wait for it.
	waitSlotActive(ctx, t, conn, rel, slot)

	const entities, versions, senders = 5, 10, 8
	type send struct{ entity, version int }
	var sends []send
	for e := range entities {
		for v := 1; v <= versions; v++ {
			for range 2 + rand.IntN(2) {
				sends = append(sends, send{e, v})
			}
		}
	}
	rand.Shuffle(len(sends), func(i, j int) { sends[i], sends[j] = sends[j], sends[i] })
	work := make(chan send)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[int]int{}
	for range senders {
		wg.Go(func() {
			for s := range work {
				body := fmt.Appendf(nil, `{"id":"evt_%d_%d","object":"event","type":"customer.updated","created":%d,"data":{"object":{"id":"cus_%d","object":"customer","v":%d}}}`,
					s.entity, s.version, 1700000000+s.version, s.entity, s.version)
				for {
					code, err := postWebhook(listen, "stripe", body)
					if err != nil {
						t.Errorf("delivery %v: %v", s, err)
						break
					}
					mu.Lock()
					answers[code]++
					mu.Unlock()
					if code != http.StatusConflict { // in flight: retry, as a provider does
						if code != http.StatusOK {
							t.Errorf("delivery %v: %d", s, code)
						}
						break
					}
				}
			}
		})
	}
	for _, s := range sends {
		work <- s
	}
	close(work)
	wg.Wait()
	t.Logf("%d sends of %d deliveries, answers %v", len(sends), entities*versions, answers)
	require.Equal(t, len(sends), answers[http.StatusOK])

	for e := range entities {
		var v int64
		require.NoError(t, conn.QueryRow(ctx, `SELECT version FROM outbox.webhook_entities WHERE source = 'stripe' AND entity_type = 'customer' AND entity_id = $1`,
			fmt.Sprintf("cus_%d", e)).Scan(&v))
		require.EqualValues(t, 1700000000+versions, v, "cus_%d ends at its newest version", e)
	}
	accepted := metricValue(t, opsAddr, "outbox_ingest_webhooks_total", `outcome="accepted",source="stripe"`)
	stale := metricValue(t, opsAddr, "outbox_ingest_webhooks_total", `outcome="stale",source="stripe"`)
	dup := metricValue(t, opsAddr, "outbox_ingest_webhooks_total", `outcome="duplicate",source="stripe"`)
	require.Equal(t, entities*versions, accepted+stale, "each distinct delivery accepted or stale once")
	require.Equal(t, len(sends)-entities*versions, dup, "every repeat a duplicate")

	newest := strconv.Itoa(1700000000 + versions)
	var recs map[string][]string // key -> versions by offset
	eventually(t, time.Minute, "the newest record of every entity in Kafka", func() error {
		rel.running(t)
		got, err := k.ReadCommitted(ctx, records)
		if err != nil {
			return err
		}
		recs = map[string][]string{}
		for _, r := range got {
			recs[string(r.Key)] = append(recs[string(r.Key)], header(r, "webhook_version"))
		}
		n := 0
		for e := range entities {
			vs := recs[fmt.Sprintf("stripe.customer.cus_%d", e)]
			if len(vs) == 0 || vs[len(vs)-1] != newest {
				return fmt.Errorf("cus_%d: versions %v", e, vs)
			}
			n += len(vs)
		}
		// Wait for every accepted delivery's record too: one arriving
		// after its entity's newest would fail the order check below.
		if n < accepted {
			return fmt.Errorf("%d records of %d accepted deliveries", n, accepted)
		}
		return nil
	})
	require.Len(t, recs, entities)
	total := 0
	for key, vs := range recs {
		total += len(vs)
		for i := 1; i < len(vs); i++ {
			prev, _ := strconv.Atoi(vs[i-1])
			cur, _ := strconv.Atoi(vs[i])
			require.Less(t, prev, cur, "%s: versions by offset %v strictly increase", key, vs)
		}
	}
	require.Equal(t, accepted, total, "one record per accepted delivery")

	// A stale delivery may commit after the last accepted one: wait for all.
	var rawRecs []*kgo.Record
	eventually(t, time.Minute, "every raw delivery in Kafka", func() error {
		rel.running(t)
		if rawRecs, err = k.ReadCommitted(ctx, raw); err != nil {
			return err
		}
		if len(rawRecs) < entities*versions {
			return fmt.Errorf("%d raw records", len(rawRecs))
		}
		return nil
	})
	ids := map[string]bool{}
	for _, r := range rawRecs {
		ids[header(r, "webhook_delivery_id")] = true
	}
	require.Len(t, rawRecs, entities*versions, "one raw event per distinct delivery")
	require.Len(t, ids, entities*versions)
	evRecs, err := k.ReadCommitted(ctx, events)
	require.NoError(t, err)
	require.Len(t, evRecs, accepted, "one event per accepted delivery")

	ing.stop(t, 20*time.Second)
	rel.stop(t, 30*time.Second)
}

// TestIngestCommandLine: `outbox ingest` validates its file once at start,
// exits 2 naming what to fix, and --check prints the settings without the
// secret and without touching a database.
func TestIngestCommandLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, doc string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(doc), 0o600))
		return p
	}
	good := file("good.yaml", "sources:\n  stripe: {preset: stripe, secret_env: [TEST_INGEST_SECRET]}\n")
	env := map[string]string{"OUTBOX_DATABASE_URL": "postgres://u:dbpass@127.0.0.1:1/db", "TEST_INGEST_SECRET": "whsec_never_printed"}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{env, []string{"ingest"}, "--config is required"},
		{nil, []string{"ingest", "--config", good}, "--database-url (or OUTBOX_DATABASE_URL) is required"},
		{env, []string{"ingest", "--config", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{merge(env, map[string]string{"TEST_INGEST_SECRET": ""}), []string{"ingest", "--config", good}, `source "stripe": secret_env TEST_INGEST_SECRET is not set`},
		{env, []string{"ingest", "--config", file("typo.yaml", "sources:\n  s: {preset: stripe, secret_env: [TEST_INGEST_SECRET], tolrance: 1m}\n")}, "field tolrance not found"},
		{env, []string{"ingest", "--config", file("generic.yaml", "sources:\n  g: {preset: generic, secret_env: [TEST_INGEST_SECRET]}\n")}, "signature.header is required"},
	} {
		r := outboxBin(t, tc.env, tc.args...)
		require.Equal(t, 2, r.code, "%v\n%s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.want, tc.args)
	}
	for _, tc := range []struct {
		url  string
		code int
		want string
	}{
		{"postgres://u:pw@host:notaport/db", 2, "--database-url"},
		{"postgres://u:pw@127.0.0.1:1/db", 1, "connection refused"},
	} {
		r := outboxBin(t, merge(env, map[string]string{"OUTBOX_DATABASE_URL": tc.url}), "ingest", "--config", good)
		require.Equal(t, tc.code, r.code, "%s\n%s", tc.url, r.stderr)
		require.Contains(t, r.stderr, tc.want)
		require.NotContains(t, r.stderr, ":pw@", "the password is never printed")
		require.Less(t, r.took, 10*time.Second, "a bad database ends the start at once")
	}
	r := outboxBin(t, merge(env, map[string]string{"OUTBOX_DATABASE_URL": pgtest.NewDatabase(t)}), "ingest", "--config", good, "--schema", "not_migrated")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "is migration 00005 applied? run outbox migrate up")
	r = outboxBin(t, env, "ingest", "--config", good, "--check")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "--config")
	require.NotContains(t, r.stdout+r.stderr, "whsec_never_printed")
	require.NotContains(t, r.stdout+r.stderr, "dbpass")
}
