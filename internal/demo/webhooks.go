package demo

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxrelay/outbox/ingest"
	"github.com/outboxrelay/outbox/internal/ops/kafkaread"
)

// WebhookSource is the demo's card acquirer: a Stripe-style sender whose
// webhooks the demo's ingest handler receives at /webhooks/acquirer.
const WebhookSource = "acquirer"

// Topics of the acquirer's webhooks, ingest's defaults for the source.
const (
	WebhookRawTopic     = "webhooks." + WebhookSource
	WebhookRecordsTopic = WebhookSource + ".records"
)

// Webhooks sends the acquirer's charge updates the way providers do: each
// charge's versions shuffled out of order across concurrent senders, some
// delivered twice (a retry after a lost answer), and one forged delivery
// whose signature is made with the wrong secret.
type Webhooks struct {
	// URL is the ingest handler's base URL.
	URL string
	// Secret is the acquirer's shared signing secret.
	Secret []byte
	// Charges and Versions size the plan: every charge gets versions
	// 1..Versions.
	Charges, Versions int
	// Senders deliver concurrently.
	Senders int

	mu sync.Mutex
	// statuses counts answers per delivery id, by status code.
	statuses map[string][]int
	base     int64
}

// forgedCharge is the entity of the forged delivery: it must never appear.
const forgedCharge = "ch_forged"

// WebhookResult is what the sender saw.
type WebhookResult struct {
	// Deliveries is the number of distinct signed deliveries; Sent counts
	// every POST, duplicates included.
	Deliveries, Sent int
	// Non2xx counts answers to signed deliveries other than 2xx.
	Non2xx int
	// ForgedStatus is the answer to the forged delivery (401 expected).
	ForgedStatus int
	// Err is the first transport error, if any.
	Err error
}

// newWebhookHandler is the ingest handler the demo mounts, with the
// acquirer's secret.
func newWebhookHandler(pool *pgxpool.Pool, secret []byte) (*ingest.Handler, error) {
	return ingest.New(ingest.Config{
		Pool:       pool,
		Sources:    []ingest.Source{{Name: WebhookSource, Preset: ingest.PresetStripe, Secrets: [][]byte{secret}}},
		Registerer: prometheus.NewRegistry(),
	})
}

// newSecret returns a random signing secret.
func newSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return []byte("whsec_" + hex.EncodeToString(b))
}

// delivery is one planned webhook.
type webhook struct {
	id      string
	charge  string
	version int
	body    []byte
}

// Run sends the plan and returns what was answered.
func (w *Webhooks) Run(ctx context.Context) WebhookResult {
	w.statuses = map[string][]int{}
	w.base = time.Now().Unix() - 3600
	var plan []webhook
	for c := range w.Charges {
		for v := 1; v <= w.Versions; v++ {
			wh := w.webhook(fmt.Sprintf("ch_%03d", c), v)
			plan = append(plan, wh)
			if mrand.IntN(4) == 0 {
				plan = append(plan, wh) // the provider's retry
			}
		}
	}
	mrand.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })

	res := WebhookResult{Deliveries: w.Charges * w.Versions, Sent: len(plan)}
	next := make(chan webhook)
	var wg sync.WaitGroup
	var errOnce sync.Once
	for range max(w.Senders, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wh := range next {
				code, err := w.post(ctx, wh.body, w.Secret)
				if err != nil {
					errOnce.Do(func() { res.Err = err })
					continue
				}
				w.mu.Lock()
				w.statuses[wh.id] = append(w.statuses[wh.id], code)
				w.mu.Unlock()
			}
		}()
	}
	for _, wh := range plan {
		select {
		case next <- wh:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()

	// Signed with a secret the acquirer does not have, and newer than any
	// real version: accepting it would overwrite a charge's state.
	forged := w.webhook(forgedCharge, w.Versions+100)
	code, err := w.post(ctx, forged.body, []byte("whsec_not-the-acquirers"))
	if err != nil && res.Err == nil {
		res.Err = err
	}
	res.ForgedStatus = code
	for _, codes := range w.statuses {
		for _, c := range codes {
			if c < 200 || c > 299 {
				res.Non2xx++
			}
		}
	}
	return res
}

// webhook builds the Stripe-shaped event of one charge version: ingest's
// stripe preset reads the delivery id at /id and orders by /created.
func (w *Webhooks) webhook(charge string, version int) webhook {
	id := fmt.Sprintf("evt_%s_v%d", charge, version)
	body, _ := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": "charge.updated", "created": w.base + int64(version),
		"data": map[string]any{"object": map[string]any{
			"id": charge, "object": "charge", "amount": 1000 + version, "currency": "eur", "demo_version": version,
		}},
	})
	return webhook{id: id, charge: charge, version: version, body: body}
}

// post signs body as Stripe does (t=UNIX,v1=HMAC-SHA256 of "t.body") and
// sends it, retrying as a provider would: a transport error, and an answer
// that asks for it (409 while a duplicate of the delivery is being written
// by another request, 429, 5xx), a few times with a short backoff. The last
// answer is what it returns.
func (w *Webhooks) post(ctx context.Context, body, secret []byte) (int, error) {
	var lastErr error
	code := 0
	for attempt := range 5 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return code, ctx.Err()
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
		t := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(t + "."))
		mac.Write(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL+"/webhooks/"+WebhookSource, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", "t="+t+",v1="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return 0, err
			}
			continue
		}
		resp.Body.Close()
		code = resp.StatusCode
		if code == http.StatusConflict || code == http.StatusTooManyRequests || code >= 500 {
			continue
		}
		return code, nil
	}
	if code != 0 {
		return code, nil
	}
	return 0, fmt.Errorf("demo: post webhook: %w", lastErr)
}

// newest is each charge's newest version in the plan.
func (w *Webhooks) newest() map[string]int64 {
	out := map[string]int64{}
	for c := range w.Charges {
		out[fmt.Sprintf("ch_%03d", c)] = w.base + int64(w.Versions)
	}
	return out
}

// auditWebhooks checks the acquirer's webhooks from the sources of truth:
// the entities table, the raw topic and the compacted records topic as a
// read_committed consumer sees them.
func (c *Counter) auditWebhooks(ctx context.Context, w *Webhooks, res WebhookResult, line func(string, ...any), check func(bool, string, ...any)) error {
	db, err := c.db(ctx)
	if err != nil {
		return err
	}
	line("webhooks: %d deliveries of %d charges sent %d times by %d senders, out of order; %d non-2xx answers; forged signature answered %d",
		res.Deliveries, w.Charges, res.Sent, w.Senders, res.Non2xx, res.ForgedStatus)
	check(res.Err == nil, "webhooks: %v", res.Err)
	check(res.Non2xx == 0, "webhooks: %d signed deliveries were not answered 2xx", res.Non2xx)
	check(res.ForgedStatus == http.StatusUnauthorized, "webhooks: the forged delivery was answered %d, not 401", res.ForgedStatus)

	rows, err := c.q.DemoWebhookEntities(ctx, db, WebhookSource)
	if err != nil {
		return fmt.Errorf("demo: webhook entities: %w", err)
	}
	newest := w.newest()
	behind := 0
	for _, r := range rows {
		check(r.EntityID != forgedCharge, "webhooks: the forged charge was accepted")
		if r.Version != newest[r.EntityID] {
			behind++
		}
	}
	check(len(rows) == w.Charges, "webhooks: %d charges known for %d sent", len(rows), w.Charges)
	check(behind == 0, "webhooks: %d charges do not hold their newest version", behind)

	recs, err := kafkaread.ReadCommitted(ctx, c.kopts, WebhookRawTopic, WebhookRecordsTopic)
	if err != nil {
		return err
	}
	raw := map[string]int{}
	stale := 0
	last := map[string]int64{}
	regressions, records := 0, 0
	for _, r := range recs {
		switch r.Topic {
		case WebhookRawTopic:
			raw[header(r, ingest.HeaderDeliveryID)]++
			if header(r, ingest.HeaderOutcome) == "stale" {
				stale++
			}
		case WebhookRecordsTopic:
			records++
			// One key is one partition, read in offset order: a record older
			// than the one before it would leave a stale state behind.
			v, _ := strconv.ParseInt(header(r, ingest.HeaderVersion), 10, 64)
			if v <= last[string(r.Key)] {
				regressions++
			}
			last[string(r.Key)] = v
		}
	}
	dup := 0
	for _, n := range raw {
		dup += n - 1
	}
	notNewest := 0
	for charge, v := range newest {
		if last[WebhookSource+".charge."+charge] != v {
			notNewest++
		}
	}
	line("webhooks: %d raw webhooks in %s (%d duplicates, %d marked stale), %d records in %s; %d keys whose last record is not the newest, %d records older than the one before them",
		len(raw), WebhookRawTopic, dup, stale, records, WebhookRecordsTopic, notNewest, regressions)
	check(len(raw) == res.Deliveries, "webhooks: %d distinct raw webhooks for %d deliveries", len(raw), res.Deliveries)
	check(dup == 0, "webhooks: %d duplicate raw webhooks", dup)
	check(raw[fmt.Sprintf("evt_%s_v%d", forgedCharge, w.Versions+100)] == 0, "webhooks: the forged delivery reached Kafka")
	check(notNewest == 0, "webhooks: %d charges' last record is not their newest version", notNewest)
	check(regressions == 0, "webhooks: %d records older than the record before them", regressions)
	return nil
}
