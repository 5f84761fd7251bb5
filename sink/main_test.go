package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/sql"
)

// envChild makes the test binary run a sink process instead of the tests: the
// crash tests re-exec themselves with it and SIGKILL the child.
const envChild = "OUTBOX_SINK_TEST_CHILD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(envChild); cfg != "" {
		os.Exit(runChild(cfg))
	}
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

// childConfig is what a child sink process runs with.
type childConfig struct {
	DatabaseURL string
	Brokers     []string
	Topic       string
	Group       string
	Instance    string
	URL         string
	LookupURL   string
	Idempotent  bool
	CrashPoint  string // hookPoint, "" for none
	CrashAfter  int    // SIGKILL at the CrashAfter-th time the point is reached
	Initial     time.Duration
	Tiers       []time.Duration
	Seed        uint64
}

func runChild(raw string) int {
	var cc childConfig
	if err := json.Unmarshal([]byte(raw), &cc); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 3
	}
	var hits atomic.Int64
	if cc.CrashPoint != "" {
		testHook = func(p hookPoint) {
			if string(p) == cc.CrashPoint && hits.Add(1) == int64(cc.CrashAfter) {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // SIGKILL is not deliverable to a handler; wait for it
			}
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ep := testEndpoint(cc.URL, cc.Idempotent)
	ep.Topics = []string{cc.Topic}
	ep.Retry = RetryPolicy{Initial: cc.Initial, Tiers: cc.Tiers, Max: time.Second}
	if cc.LookupURL != "" {
		rec, err := NewLookupReconciler(cc.LookupURL+"/{{.ID}}", "", nil)
		if err != nil {
			return 3
		}
		ep.Reconcile = rec
	}
	s, err := New(Config{
		DatabaseURL: cc.DatabaseURL, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(cc.Brokers...), kgo.InstanceID(cc.Instance), kgo.FetchMaxWait(time.Second)},
		Group: cc.Group, Endpoints: []Endpoint{ep}, CommitInterval: 100 * time.Millisecond, Logger: logger,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	ctx, stop := signalContext()
	defer stop()
	if err := s.Run(ctx, 20*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func testEndpoint(url string, idempotent bool) Endpoint {
	req, err := NewTemplateRequest(RequestTemplate{URL: url + "/call/{{.ID}}", Headers: map[string]string{"X-Event-Type": "{{.EventType}}"}})
	if err != nil {
		panic(err)
	}
	return Endpoint{Name: "api", Request: req, Idempotent: idempotent, Timeout: 5 * time.Second}
}

// testBundle is one test's Postgres, Kafka and API.
type testBundle struct {
	t      testing.TB
	url    string
	pool   *pgxpool.Pool
	kafka  *kafkatest.Kafka
	topic  string
	api    *testAPI
	events []uuid.UUID
}

func setup(t testing.TB, partitions int32) *testBundle {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	m, err := migrations.Open(ctx, url, "", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	k := kafkatest.New(t)
	b := &testBundle{t: t, url: url, pool: pool, kafka: k, topic: k.Topic("orders", partitions, nil), api: newTestAPI(t)}
	return b
}

// produce writes n events with keys cycling over keys, and returns their ids.
func (b *testBundle) produce(n, keys int) []uuid.UUID {
	b.t.Helper()
	cl, err := kgo.NewClient(append(b.kafka.Opts(), kgo.DefaultProduceTopic(b.topic), kgo.ProducerLinger(5*time.Millisecond))...)
	require.NoError(b.t, err)
	defer cl.Close()
	ids := make([]uuid.UUID, n)
	recs := make([]*kgo.Record, n)
	for i := range n {
		ids[i] = uuid.Must(uuid.NewV7())
		recs[i] = &kgo.Record{
			Key:   []byte("k" + strconv.Itoa(i%keys)),
			Value: []byte(fmt.Sprintf(`{"n":%d}`, i)),
			Headers: []kgo.RecordHeader{
				{Key: envelope.HeaderEventID, Value: []byte(ids[i].String())},
				{Key: envelope.HeaderEventType, Value: []byte("order.placed")},
				{Key: envelope.HeaderTraceparent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
			},
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(b.t, cl.ProduceSync(ctx, recs...).FirstErr())
	b.events = append(b.events, ids...)
	return ids
}

func (b *testBundle) config(group string, eps ...Endpoint) Config {
	return Config{
		Pool: b.pool, KafkaOpts: b.kafka.Opts(), Group: group, Endpoints: eps,
		CommitInterval: 100 * time.Millisecond, StatusInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{b.t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

func (b *testBundle) endpoint(idempotent bool) Endpoint {
	ep := testEndpoint(b.api.srv.URL, idempotent)
	ep.Topics = []string{b.topic}
	return ep
}

func (b *testBundle) start(cfg Config) *Sink {
	b.t.Helper()
	s, err := New(cfg)
	require.NoError(b.t, err)
	require.NoError(b.t, s.Start(context.Background()))
	b.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(b.t, s.Stop(ctx))
	})
	return s
}

// rows reads the ledger of endpoint "api".
func (b *testBundle) rows() []sql.SinkLedger {
	b.t.Helper()
	rows, err := sql.New().LedgerList(context.Background(), sql.InSchema(b.pool, "outbox"), "api")
	require.NoError(b.t, err)
	return rows
}

func (b *testBundle) counts() map[string]int {
	out := map[string]int{}
	for _, r := range b.rows() {
		out[r.Status]++
	}
	return out
}

// waitSettled waits until every produced event's row is in a final status.
func (b *testBundle) waitSettled(timeout time.Duration, final ...string) map[string]int {
	b.t.Helper()
	if len(final) == 0 {
		final = []string{StatusSucceeded, StatusDeadLettered}
	}
	deadline := time.Now().Add(timeout)
	for {
		c := b.counts()
		n := 0
		for _, f := range final {
			n += c[f]
		}
		if n == len(b.events) {
			return c
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("ledger not settled after %v: %v of %d events", timeout, c, len(b.events))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// testAPI is an external API that fails on demand and remembers every call.
type testAPI struct {
	srv *httptest.Server
	mu  sync.Mutex
	// requests are the arrival times of every request per Idempotency-Key.
	requests map[string][]time.Time
	// performed counts the calls that did the work (2xx, first per key when
	// honouring keys).
	performed map[string]int
	// honourKeys replays a key's first 2xx instead of doing the work again.
	honourKeys bool
	// fail answers for the n-th (from 1) request of a key; 0 means 200.
	fail         func(key string, n int) (status int, retryAfter string)
	traceparents map[string]string
	// bodies are the last request body per key.
	bodies map[string][]byte
	// slow delays the answer of the n-th request of a key after the work is
	// done: a caller that times out does not know the work happened.
	slow func(key string, n int) time.Duration
}

func newTestAPI(t testing.TB) *testAPI {
	a := &testAPI{requests: map[string][]time.Time{}, performed: map[string]int{}, traceparents: map[string]string{}, bodies: map[string][]byte{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /call/{id}", func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" || key != r.PathValue("id") {
			http.Error(w, "missing Idempotency-Key", http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.requests[key] = append(a.requests[key], time.Now())
		a.traceparents[key] = r.Header.Get("traceparent")
		a.bodies[key] = body
		n := len(a.requests[key])
		status, ra := 0, ""
		if a.fail != nil {
			status, ra = a.fail(key, n)
		}
		var delay time.Duration
		if a.slow != nil && status == 0 {
			delay = a.slow(key, n)
		}
		if status == 0 {
			if !a.honourKeys || a.performed[key] == 0 {
				a.performed[key]++
			}
		}
		a.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if status != 0 {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			http.Error(w, "failing on demand", status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"id":"ref-%s","status":"done"}`, key)
	})
	mux.HandleFunc("GET /lookup/{id}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		done := a.performed[r.PathValue("id")] > 0
		a.mu.Unlock()
		if !done {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"status":"done"}`))
	})
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

func (a *testAPI) setFail(f func(key string, n int) (int, string)) {
	a.mu.Lock()
	a.fail = f
	a.mu.Unlock()
}

func (a *testAPI) snapshot() (requests map[string]int, performed map[string]int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	requests = map[string]int{}
	for k, v := range a.requests {
		requests[k] = len(v)
	}
	performed = map[string]int{}
	for k, v := range a.performed {
		performed[k] = v
	}
	return requests, performed
}

func (a *testAPI) times(key string) []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.requests[key]...)
}
