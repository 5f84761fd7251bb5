package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// largeAttachment is the size of a large order's attachment.
const largeAttachment = 1536 << 10

// LargeOrder says whether the load's i-th order carries an attachment: one
// in 40.
func LargeOrder(i int) bool { return i%40 == 7 }

// LargeOrders is how many of the orders to place carry an attachment.
func (l *Load) LargeOrders() int {
	n := 0
	for i := range l.Orders {
		if LargeOrder(i) {
			n++
		}
	}
	return n
}

// Load sends orders to an order service, resubmitting some with the same
// Idempotency-Key as a client retrying after a lost answer would.
type Load struct {
	// URL of the order service (POST URL + "/orders").
	URL string
	// Orders is how many distinct orders to place.
	Orders int
	// Rate is orders per second. Defaults to 50.
	Rate float64
	// DuplicateRate is the chance an order is submitted twice, from 0 to 1.
	// Zero: every order is submitted once.
	DuplicateRate float64
	// Workers sending at once. Defaults to 8.
	Workers int

	accepted, duplicates, replays, failed atomic.Int64

	mu     sync.Mutex
	traces map[string]bool // trace ids sent with the orders
}

// SentTrace reports whether traceID came with one of the orders.
func (l *Load) SentTrace(traceID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.traces[traceID]
}

// LoadResult counts what the load generator saw.
type LoadResult struct {
	Accepted   int64 // distinct orders answered 201 (first answer)
	Duplicates int64 // resubmissions sent
	Replays    int64 // resubmissions answered with the stored response
	Failed     int64 // orders never accepted
}

// Result returns the counts so far.
func (l *Load) Result() LoadResult {
	return LoadResult{l.accepted.Load(), l.duplicates.Load(), l.replays.Load(), l.failed.Load()}
}

// Run places the orders and returns when all were answered or ctx ended.
func (l *Load) Run(ctx context.Context) LoadResult {
	if l.Rate <= 0 {
		l.Rate = 50
	}
	if l.Workers <= 0 {
		l.Workers = 8
	}
	lim := rate.NewLimiter(rate.Limit(l.Rate), 1)
	client := &http.Client{Timeout: 10 * time.Second}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range l.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				l.place(ctx, client, i)
			}
		}()
	}
	for i := 0; i < l.Orders; i++ {
		if err := lim.Wait(ctx); err != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return l.Result()
}

func (l *Load) place(ctx context.Context, client *http.Client, i int) {
	key := fmt.Sprintf("order-%d-%d", time.Now().UnixNano(), i)
	// Each order starts a trace, as a traced client or gateway would.
	traceID := fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
	l.mu.Lock()
	if l.traces == nil {
		l.traces = map[string]bool{}
	}
	l.traces[traceID] = true
	l.mu.Unlock()
	traceparent := fmt.Sprintf("00-%s-%016x-01", traceID, rand.Uint64()|1)
	req := OrderRequest{
		CustomerID: fmt.Sprintf("cust-%d", i%37), AmountCents: int64(500 + i%50*100), Currency: "EUR",
		Items:   json.RawMessage(fmt.Sprintf(`[{"sku":"sku-%d","qty":%d}]`, i%11, 1+i%3)),
		Address: json.RawMessage(`{"city":"Lisbon","zip":"1100-148"}`),
	}
	if LargeOrder(i) {
		// A scanned purchase order attached: the event is over the writer's
		// 1 MiB limit and goes to Kafka by reference (claim-check).
		req.Attachment = strings.Repeat("JVBERi0xLjQK", largeAttachment/12)
	}
	body, _ := json.Marshal(req)
	accepted := false
	// A client retries until it gets an answer that is not a conflict.
	for attempt := 0; attempt < 20 && ctx.Err() == nil; attempt++ {
		code, replayed := l.post(ctx, client, key, traceparent, body)
		if code == http.StatusCreated {
			if replayed {
				l.replays.Add(1)
			}
			accepted = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !accepted {
		l.failed.Add(1)
		return
	}
	l.accepted.Add(1)
	if rand.Float64() < l.DuplicateRate {
		l.duplicates.Add(1)
		if code, replayed := l.post(ctx, client, key, traceparent, body); code == http.StatusCreated && replayed {
			l.replays.Add(1)
		}
	}
}

func (l *Load) post(ctx context.Context, client *http.Client, key, traceparent string, body []byte) (int, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.URL+"/orders", bytes.NewReader(body))
	if err != nil {
		return 0, false
	}
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", traceparent)
	resp, err := client.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Idempotent-Replayed") == "true"
}
