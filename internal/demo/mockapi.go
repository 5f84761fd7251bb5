package demo

import (
	"encoding/json"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MockAPI is an external API that fails on purpose and counts effects: the
// charges or shipments it actually made, per idempotency key. The audit's
// "external calls per event" is its effect count.
type MockAPI struct {
	// Name labels the API ("payment", "shipping").
	Name string
	// HonoursKeys: a repeated Idempotency-Key returns the first result and makes
	// no new effect (payment gateways). False: every call is a new effect (a
	// shipping provider that ignores the header; re-calling ships twice).
	HonoursKeys bool
	// FailRate is the chance of a 503 before any effect.
	FailRate float64
	// TimeoutRate is the chance that the effect happens but the answer comes
	// after Delay, past the caller's timeout: the case the ledger exists for.
	TimeoutRate float64
	// RateLimitRate is the chance of a 429 with Retry-After: 1.
	RateLimitRate float64
	// Delay is how long a "timed out" answer takes. Defaults to 3s.
	Delay time.Duration
	// DeclineEvery, when positive, declines the first call of about one key
	// in DeclineEvery (those whose FNV-1a hash it divides) with 422 and no
	// effect: a card declined, which the sink dead-letters at once; a later
	// call of the key (a replay, after the customer fixed the card) goes
	// through. Zero: nothing is declined.
	DeclineEvery int

	mu       sync.Mutex
	effects  map[string]int    // idempotency key -> effects made
	traces   map[string]string // idempotency key -> trace id of the effecting call
	declined map[string]bool   // idempotency keys declined once (DeclineEvery)
	calls    atomic.Int64
}

// declines reports whether the call of key is the one DeclineEvery
// declines, and remembers it; m.mu is held.
func (m *MockAPI) declines(key string) bool {
	if m.DeclineEvery <= 0 || m.declined[key] {
		return false
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	if h.Sum32()%uint32(m.DeclineEvery) != 0 {
		return false
	}
	if m.declined == nil {
		m.declined = map[string]bool{}
	}
	m.declined[key] = true
	return true
}

// Declined is how many keys were declined once.
func (m *MockAPI) Declined() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.declined)
}

// ServeHTTP: POST /<anything> makes an effect; GET /status/<key> answers the
// reconciliation lookup (200 with the effect, 404 if none).
func (m *MockAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	if m.effects == nil {
		m.effects = map[string]int{}
	}
	m.mu.Unlock()
	if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/status/") {
		key := strings.TrimPrefix(r.URL.Path, "/status/")
		m.mu.Lock()
		n := m.effects[key]
		m.mu.Unlock()
		if n == 0 {
			http.Error(w, `{"status":"not_found"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "done", "reference": m.Name + "-" + key})
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	m.calls.Add(1)
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		http.Error(w, `{"error":"Idempotency-Key required"}`, http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	declined := m.declines(key)
	m.mu.Unlock()
	if declined {
		http.Error(w, `{"error":"card_declined"}`, http.StatusUnprocessableEntity)
		return
	}
	roll := rand.Float64()
	switch {
	case roll < m.FailRate:
		http.Error(w, `{"error":"temporarily unavailable"}`, http.StatusServiceUnavailable)
		return
	case roll < m.FailRate+m.RateLimitRate:
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"slow down"}`, http.StatusTooManyRequests)
		return
	}
	m.mu.Lock()
	if !m.HonoursKeys || m.effects[key] == 0 {
		m.effects[key]++
		if m.traces == nil {
			m.traces = map[string]string{}
		}
		if tp := strings.Split(r.Header.Get("traceparent"), "-"); len(tp) == 4 {
			m.traces[key] = tp[1]
		}
	}
	m.mu.Unlock()
	if roll < m.FailRate+m.RateLimitRate+m.TimeoutRate {
		d := m.Delay
		if d == 0 {
			d = 3 * time.Second
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "done", "reference": m.Name + "-" + key})
}

// Effects returns how many keys got an effect and the most effects any key got.
func (m *MockAPI) Effects() (keys, maxPerKey int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.effects {
		keys++
		if n > maxPerKey {
			maxPerKey = n
		}
	}
	return keys, maxPerKey
}

// Traces returns the trace id each effect's call carried ("" when none).
func (m *MockAPI) Traces() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.effects))
	for k := range m.effects {
		out[k] = m.traces[k]
	}
	return out
}

// Calls is how many POSTs the API received.
func (m *MockAPI) Calls() int64 { return m.calls.Load() }
