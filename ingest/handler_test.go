package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestBadSignatureWritesNothing: a wrong, missing or expired signature is
// 401 with a reason, and no row of any kind is written.
func TestBadSignatureWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	body := stripeEvent("evt_bad", "cus_1", 100)
	now := b.now.Load()
	for name, header := range map[string]map[string]string{
		"wrong secret":     {"Stripe-Signature": stripeHeader("whsec_wrong", now, body)},
		"missing":          {},
		"too old":          {"Stripe-Signature": stripeHeader(stripeSecret, now-301, body)},
		"too far ahead":    {"Stripe-Signature": stripeHeader(stripeSecret, now+301, body)},
		"body changed":     {"Stripe-Signature": stripeHeader(stripeSecret, now, append([]byte(" "), body...))},
		"another preset's": {"X-Hub-Signature-256": "sha256=" + strings.Repeat("0", 64)},
	} {
		code, got, _ := b.post("stripe", body, header)
		require.Equal(t, http.StatusUnauthorized, code, name)
		require.Contains(t, got, `"error":"bad_signature"`, name)
	}
	code, got, _ := b.post("github", []byte(`{"zen":"x"}`), map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("ab", 32), "X-GitHub-Delivery": "d1", "X-GitHub-Event": "ping"})
	require.Equal(t, http.StatusUnauthorized, code)
	require.Contains(t, got, "signature does not match")
	code, got, _ = b.post("stripe", body, map[string]string{"Stripe-Signature": stripeHeader(stripeSecret, now-301, body)})
	require.Equal(t, http.StatusUnauthorized, code)
	require.Contains(t, got, "signed timestamp outside tolerance")
	require.Equal(t, counts{}, b.counts(), "nothing written")

	// The same body, signed now, is accepted: the rejections were the signatures'.
	code, _, _ = b.postStripe(body)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, counts{raw: 1, records: 1, events: 1, keys: 1, entities: 1}, b.counts())
}

// TestDeliveryOutcomes walks a delivery through accepted, duplicate, stale
// and newer, for each preset, and every client error, checking the rows,
// the answers and the metrics.
func TestDeliveryOutcomes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b := setup(t, Config{Registerer: reg, MaxBodyBytes: 4096})
	ctx := context.Background()
	metric := func(source, outcome string) int {
		return int(testutil.ToFloat64(b.h.m.webhooks.WithLabelValues(source, outcome)))
	}

	code, got, _ := b.postStripe(stripeEvent("evt_2", "cus_1", 200))
	require.Equal(t, http.StatusOK, code, got)
	require.JSONEq(t, `{"outcome":"accepted","source":"stripe","delivery_id":"evt_2","entity":"stripe.customer.cus_1","version":200}`, got)
	require.Equal(t, counts{raw: 1, records: 1, events: 1, keys: 1, entities: 1}, b.counts())
	var payload, headers string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT convert_from(payload, 'UTF8'), headers::text FROM outbox.events WHERE kind = 'record'`).Scan(&payload, &headers))
	require.JSONEq(t, `{"id":"cus_1","object":"customer","name":"v200"}`, payload, "the record is the object")
	require.Contains(t, headers, `"webhook_version": "200"`)

	// A redelivery, signed anew as Stripe does: the stored answer, nothing written.
	b.now.Add(10)
	code, replay, h := b.postStripe(stripeEvent("evt_2", "cus_1", 200))
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, got, replay)
	require.Equal(t, "true", h.Get("Idempotent-Replayed"))
	require.Equal(t, counts{raw: 1, records: 1, events: 1, keys: 1, entities: 1}, b.counts())

	// An older version of the entity, arriving late: 200, stale, raw only.
	code, got, _ = b.postStripe(stripeEvent("evt_1", "cus_1", 100))
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, got, `"outcome":"stale"`)
	require.Equal(t, counts{raw: 2, records: 1, events: 1, keys: 2, entities: 1}, b.counts())
	var outcome string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT headers->>'webhook_outcome' FROM outbox.events WHERE headers->>'webhook_delivery_id' = 'evt_1'`).Scan(&outcome))
	require.Equal(t, "stale", outcome)
	// The same version again under another delivery id is not newer either.
	code, got, _ = b.postStripe(stripeEvent("evt_2b", "cus_1", 200))
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, got, `"outcome":"stale"`)
	code, got, _ = b.postStripe(stripeEvent("evt_3", "cus_1", 300))
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, got, `"outcome":"accepted"`)
	require.Equal(t, counts{raw: 4, records: 2, events: 2, keys: 4, entities: 1}, b.counts())
	row, err := b.h.q.GetWebhookEntity(ctx, sqlIn(b), getEntity("stripe", "customer", "cus_1"))
	require.NoError(t, err)
	require.EqualValues(t, 300, row.Version)
	require.Equal(t, "evt_3", row.DeliveryID)

	// GitHub: the issue named by X-GitHub-Event, ordered by its updated_at.
	gh := func(delivery, updated string) (int, string) {
		body := fmt.Appendf(nil, `{"action":"edited","issue":{"id":42,"title":"t","updated_at":%q},"repository":{"id":7}}`, updated)
		m := hmac.New(sha256.New, []byte(githubSecret))
		m.Write(body)
		code, got, _ := b.post("github", body, map[string]string{
			"X-Hub-Signature-256": "sha256=" + hex.EncodeToString(m.Sum(nil)), "X-GitHub-Delivery": delivery, "X-GitHub-Event": "issues"})
		return code, got
	}
	code, got = gh("gh-2", "2024-05-01T10:00:02Z")
	require.Equal(t, http.StatusOK, code, got)
	require.JSONEq(t, `{"outcome":"accepted","source":"github","delivery_id":"gh-2","entity":"github.issue.42","updated_at":"2024-05-01T10:00:02Z"}`, got)
	code, got = gh("gh-1", "2024-05-01T10:00:01Z")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, got, `"outcome":"stale"`)
	var eventType string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT event_type FROM outbox.events WHERE kind = 'record' AND aggregate_id = 'github.issue.42'`).Scan(&eventType))
	require.Equal(t, "issues.edited", eventType)

	// Generic, mapped: base64 MAC with a prefix, delivery id from a header.
	acme := func(delivery string, body []byte) (int, string) {
		m := hmac.New(sha256.New, []byte(genericSecret))
		m.Write(body)
		code, got, _ := b.post("acme", body, map[string]string{"X-Acme-Signature": "v1=" + base64.StdEncoding.EncodeToString(m.Sum(nil)), "X-Acme-Delivery": delivery})
		return code, got
	}
	code, got = acme("a-1", []byte(`{"kind":"order","id":"o-1","version":"5","event":"order.paid"}`))
	require.Equal(t, http.StatusOK, code, got)
	require.Contains(t, got, `"entity":"acme.order.o-1","version":5`)
	code, got = acme("a-2", []byte(`{"kind":"order","id":"o-1","version":"x","event":"order.paid"}`))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, got, `"error":"unmapped"`)
	require.Contains(t, got, "version /version is x, not an integer")
	code, got = acme("a-3", []byte(`{"kind":"order","version":6,"event":"order.paid"}`))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, got, "entity_id /id is missing")
	code, got = acme("", []byte(`{"kind":"order","id":"o-1","version":6,"event":"order.paid"}`))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, got, "delivery_id header:X-Acme-Delivery is missing")

	// Generic raw-only: any body, no record.
	m := hmac.New(sha256.New, []byte(genericSecret))
	m.Write([]byte("plain text"))
	req, _ := http.NewRequest(http.MethodPost, b.srv.URL+"/webhooks/raw", strings.NewReader("plain text"))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("X-Sig", hex.EncodeToString(m.Sum(nil)))
	req.Header.Set("X-Delivery", "r-1")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var ct string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT content_type FROM outbox.events WHERE aggregate_id = 'r-1'`).Scan(&ct))
	require.Equal(t, "text/plain", ct)

	before := b.counts()
	// Client errors, each with its code.
	code, got, _ = b.post("nope", []byte(`{}`), nil)
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, got, `"error":"unknown_source"`)
	code, got, _ = b.postStripe([]byte(strings.Repeat(" ", 5000)))
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
	require.Contains(t, got, "over the limit of 4096")
	code, got, _ = b.postStripe([]byte(`not json`))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, got, `"error":"not_json"`)
	code, got, _ = b.postStripe([]byte(`{"id":"evt_x","type":"t","created":1,"data":{}}`))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, got, "entity_type /data/object/object is missing")
	code, got, _ = b.postStripe([]byte(strings.Replace(string(stripeEvent("evt_3", "cus_1", 300)), "v300", "changed", 1)))
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Contains(t, got, `"error":"delivery_id_reused"`)
	resp, err = http.Get(b.srv.URL + "/webhooks/stripe")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, before, b.counts(), "client errors write nothing")

	require.Equal(t, 2, metric("stripe", outcomeAccepted))
	require.Equal(t, 2, metric("stripe", outcomeStale))
	require.Equal(t, 1, metric("stripe", outcomeDuplicate))
	require.Equal(t, 5, metric("stripe", outcomeInvalid))
	require.Equal(t, 1, metric("github", outcomeStale))
	require.Equal(t, 3, metric("acme", outcomeInvalid))
	require.Equal(t, 1, metric("", outcomeUnknownSource))
}

// TestConcurrentOutOfOrder sends the versions of several entities shuffled,
// each delivery two or three times, from 8 concurrent senders: the newest
// version wins in webhook_entities, each distinct delivery is one raw event,
// and no version is recorded twice. (cmd/outbox's TestIngestRelayOrder
// checks the Kafka order of the records through the real relay.)
func TestConcurrentOutOfOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	const entities, versions, senders = 4, 12, 8
	type send struct {
		entity, version int
	}
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
				body := stripeEvent(fmt.Sprintf("evt_%d_%d", s.entity, s.version), fmt.Sprintf("cus_%d", s.entity), int64(s.version))
				for {
					// Not postTo: a sender goroutine must not call t.FailNow.
					req, _ := http.NewRequest(http.MethodPost, b.srv.URL+"/webhooks/stripe", strings.NewReader(string(body)))
					req.Header.Set("Stripe-Signature", stripeHeader(stripeSecret, time.Now().Unix(), body))
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Errorf("send %v: %v", s, err)
						break
					}
					resp.Body.Close()
					code := resp.StatusCode
					mu.Lock()
					answers[code]++
					mu.Unlock()
					if code != http.StatusConflict { // in flight: retry as a provider would
						if code != http.StatusOK {
							t.Errorf("send %v: %d", s, code)
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
	t.Logf("%d sends, answers %v", len(sends), answers)

	ctx := context.Background()
	for e := range entities {
		row, err := b.h.q.GetWebhookEntity(ctx, sqlIn(b), getEntity("stripe", "customer", fmt.Sprintf("cus_%d", e)))
		require.NoError(t, err)
		require.EqualValues(t, versions, row.Version, "entity %d ends at its newest version", e)
	}
	c := b.counts()
	require.Equal(t, entities*versions, c.raw, "one raw event per distinct delivery")
	require.Equal(t, entities*versions, c.keys)
	require.Equal(t, c.records, c.events)
	var dup, maxV int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM (SELECT aggregate_id, headers->>'webhook_version' FROM outbox.events WHERE kind = 'record' GROUP BY 1, 2 HAVING count(*) > 1) d),
		(SELECT count(*) FROM outbox.events WHERE kind = 'record' AND (headers->>'webhook_version')::int = $1)`, versions).Scan(&dup, &maxV))
	require.Zero(t, dup, "no version recorded twice")
	require.Equal(t, entities, maxV, "every entity's newest version recorded")
}
