package console_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/console"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/sink"
	"github.com/outboxrelay/outbox/sql"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(kafkatest.M(m))
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// pipeline is one test's real pipeline: a Postgres database with the
// migrations, a Kafka cluster (kfake unless kafkatest is told otherwise), a
// relay and a sink running in this process against an API that rejects the
// orders in reject, some orders written through the outbox writer, and a
// consumer group that committed and left (lag with no member: STOP). The
// relay and the sink export their metrics to registries of their own,
// served on /metrics as their --metrics-addr would.
type pipeline struct {
	t       *testing.T
	url     string
	pool    *pgxpool.Pool
	k       *kafkatest.Kafka
	topic   string // the orders topic the relay writes
	dlq     string // the sink's dead-letter topic
	stalled string // the group that left with lag
	api     *api
	orders  []order
	prefix  string

	relayMetrics, sinkMetrics metricsServer
}

// metricsServer is a stage's registry served on /metrics.
type metricsServer struct {
	reg *prometheus.Registry
	url string // http://127.0.0.1:PORT/metrics
}

// serveMetrics serves a new registry's /metrics until the test ends.
func serveMetrics(t *testing.T) metricsServer {
	reg := prometheus.NewRegistry()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return metricsServer{reg: reg, url: srv.URL + "/metrics"}
}

// relayConfig is the pipeline's relay, exporting to reg.
func (p *pipeline) relayConfig(reg prometheus.Registerer) relay.Config {
	return relay.Config{
		DatabaseURL: p.url, Schema: "outbox", Slot: p.prefix + "_relay", KafkaOpts: p.k.Opts(),
		CheckpointTopic: p.prefix + ".checkpoints", TopicTemplate: p.topic, HeartbeatInterval: 500 * time.Millisecond,
		StandbyPollInterval: 100 * time.Millisecond, RetryBackoff: 100 * time.Millisecond, Logger: testLogger(p.t),
		Registerer: reg,
	}
}

// runRelay runs a relay until the test ends.
func (p *pipeline) runRelay(cfg relay.Config) {
	p.t.Helper()
	r, err := relay.New(cfg)
	require.NoError(p.t, err)
	rctx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan error, 1)
	go func() { relayDone <- r.Run(rctx) }()
	p.t.Cleanup(func() {
		stopRelay()
		select {
		case <-relayDone:
		case <-time.After(30 * time.Second):
			p.t.Error("relay did not stop within 30s")
		}
	})
}

// order is one written order and its event.
type order struct {
	ID            string
	EventID       uuid.UUID
	CorrelationID string
	TraceID       string
	Rejected      bool
}

// api is the external API the sink calls: 422 for a rejected order, else
// 200 with a charge reference.
type api struct {
	srv *httptest.Server
	mu  sync.Mutex
	bad map[string]bool // order ids answered 422
	ok  map[string]int  // order id -> accepted calls
}

func newAPI(t *testing.T) *api {
	a := &api{bad: map[string]bool{}, ok: map[string]int{}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Order string `json:"order"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.bad[body.Order] {
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = io.WriteString(w, `{"error":"card_declined","order":"`+body.Order+`"}`)
			return
		}
		a.ok[body.Order]++
		_, _ = io.WriteString(w, `{"charge":"ch_`+body.Order+`","status":"captured"}`)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *api) accept(order string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.bad, order)
}

// calls is how many calls were accepted, for a failure's message.
func (a *api) calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.ok {
		n += c
	}
	return n
}

func (a *api) accepted(order string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ok[order]
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newPipeline starts the pipeline and writes orders; rejected of them are
// declined by the API and end up dead-lettered. It returns once every order
// is settled in the ledger and the dead letters are on their topic.
func newPipeline(t *testing.T, orders, rejected int) *pipeline {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p := &pipeline{t: t, url: pgtest.NewDatabase(t), k: kafkatest.New(t), api: newAPI(t), prefix: fmt.Sprintf("c%06x", rand.Uint32()>>8)}
	m, err := migrations.Open(ctx, p.url, "outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	p.pool, err = pgxpool.New(context.Background(), p.url)
	require.NoError(t, err)
	t.Cleanup(p.pool.Close)

	p.topic = p.prefix + ".orders"
	p.dlq = p.topic + ".dlt"
	p.k.CreateTopic(p.topic, 3, nil)
	p.k.CreateTopic(p.dlq, 3, nil)
	p.k.CreateTopic(p.dlq+".replayed", 1, map[string]string{"cleanup.policy": "compact"})
	p.k.CreateTopic(p.dlq+".quarantine", 3, nil)
	p.k.CreateTopic(p.prefix+".checkpoints", 1, map[string]string{"cleanup.policy": "compact"})

	p.relayMetrics, p.sinkMetrics = serveMetrics(t), serveMetrics(t)
	p.runRelay(p.relayConfig(p.relayMetrics.reg))
	// The slot must exist before the orders are written.
	require.Eventually(t, func() bool {
		var n int
		err := p.pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active`, p.prefix+"_relay").Scan(&n)
		return err == nil && n == 1
	}, 60*time.Second, 50*time.Millisecond, "the relay never held its slot")

	req, err := sink.NewTemplateRequest(sink.RequestTemplate{URL: p.api.srv.URL + "/charges/{{.ID}}"})
	require.NoError(t, err)
	s, err := sink.New(sink.Config{
		Pool: p.pool, KafkaOpts: p.k.Opts(), Group: p.prefix + "-payments", CommitInterval: 100 * time.Millisecond,
		Endpoints: []sink.Endpoint{{Name: "payments", Topics: []string{p.topic}, Request: req, Idempotent: true, Timeout: 5 * time.Second,
			Retry: sink.RetryPolicy{Retries: 1, Initial: 100 * time.Millisecond, Tiers: []time.Duration{time.Second}}}},
		Logger: testLogger(t), Registerer: p.sinkMetrics.reg,
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, s.Stop(sctx))
	})

	w, err := outbox.New(outbox.Config{})
	require.NoError(t, err)
	for i := range orders {
		o := order{ID: fmt.Sprintf("order-%s-%d", p.prefix, i), CorrelationID: fmt.Sprintf("corr-%s-%d", p.prefix, i),
			TraceID: fmt.Sprintf("%032x", rand.Uint64()), Rejected: i < rejected}
		if o.Rejected {
			p.api.mu.Lock()
			p.api.bad[o.ID] = true
			p.api.mu.Unlock()
		}
		err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
			ids, err := w.Write(ctx, tx, outbox.Event{AggregateType: "order", AggregateID: o.ID, EventType: "order.placed", Topic: p.topic,
				Payload: []byte(`{"order":"` + o.ID + `","amount":1999}`),
				Headers: map[string]string{"correlation_id": o.CorrelationID, "traceparent": "00-" + o.TraceID + "-00f067aa0ba902b7-01"}})
			if err == nil {
				o.EventID = ids[0]
			}
			return err
		})
		require.NoError(t, err)
		p.orders = append(p.orders, o)
	}
	p.waitLedger(ctx, map[string]int64{sink.StatusSucceeded: int64(orders - rejected), sink.StatusDeadLettered: int64(rejected)})
	require.Eventually(t, func() bool { return p.deadLetters(ctx) == rejected }, 30*time.Second, 100*time.Millisecond, "dead letters on %s", p.dlq)

	// A group that consumed nothing, committed offset 0 and left: lag, no member.
	p.stalled = p.prefix + "-stalled"
	adm := p.k.Admin()
	offs := kadm.Offsets{}
	for part := range int32(3) {
		offs.AddOffset(p.topic, part, 0, -1)
	}
	resp, err := adm.CommitOffsets(ctx, p.stalled, offs)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	return p
}

// waitLedger waits until the ledger counts are exactly want.
func (p *pipeline) waitLedger(ctx context.Context, want map[string]int64) {
	p.t.Helper()
	// Two minutes: the kfake pass runs every package at once on two cores
	// (CI saw one minute pass without the ledger settling).
	deadline := time.Now().Add(2 * time.Minute)
	for {
		counts, err := sink.Status(ctx, p.pool, "outbox", time.Now().Add(-time.Hour))
		got := map[string]int64{}
		for _, c := range counts {
			got[c.Status] += c.Rows
		}
		if err == nil && fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the ledger did not settle at %v within 2m: now %v (err %v); the API saw %d calls", want, got, err, p.api.calls())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deadLetters counts the committed records of the dead-letter topic.
func (p *pipeline) deadLetters(ctx context.Context) int {
	recs, err := p.k.ReadCommitted(ctx, p.dlq)
	if err != nil {
		return -1
	}
	return len(recs)
}

// ledgerRow reads the payments endpoint's row of an event.
func (p *pipeline) ledgerRow(ctx context.Context, id uuid.UUID) sql.SinkLedger {
	p.t.Helper()
	row, err := sql.New().LedgerGet(ctx, sql.InSchema(p.pool, "outbox"), sql.LedgerGetParams{Endpoint: "payments", EventID: id})
	require.NoError(p.t, err)
	return row
}

// console starts a console over the pipeline and serves it; mutate changes
// the config first.
func (p *pipeline) console(mutate func(*console.Config)) *httptest.Server {
	p.t.Helper()
	cfg := console.Config{Pool: p.pool, KafkaOpts: p.k.Opts(), Interval: 500 * time.Millisecond, Window: 1,
		ProbeTimeout: time.Second, Logger: testLogger(p.t)}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := console.New(cfg)
	require.NoError(p.t, err)
	require.NoError(p.t, s.Start(context.Background()))
	srv := httptest.NewServer(s)
	p.t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(p.t, s.Stop(ctx))
	})
	return srv
}

// getJSON fetches path?format=json from srv into v and returns the status.
func getJSON(t testing.TB, srv *httptest.Server, path string, v any) int {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	resp, err := http.Get(srv.URL + path + sep + "format=json")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if v != nil && resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal(body, v), "%s: %s", path, body)
	}
	return resp.StatusCode
}

// post posts form to srv's path with the headers and returns status and body.
func post(t *testing.T, srv *httptest.Server, path string, form url.Values, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// getHTML fetches path from srv and returns the page, failing on a status
// other than 200.
func getHTML(t *testing.T, srv *httptest.Server, path string) string {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	return string(body)
}

func basic(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
}

func decode(t *testing.T, body string, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal([]byte(body), v), body)
}
