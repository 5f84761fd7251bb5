package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/sql"
)

// envChild makes the test binary run an ingest server instead of the tests:
// the crash test re-execs itself with it and the child SIGKILLs itself at a
// hook point.
const envChild = "OUTBOX_INGEST_TEST_CHILD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(envChild); cfg != "" {
		os.Exit(runChild(cfg))
	}
	code := pgtest.Main(m)
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

// childConfig is what a child ingest server runs with.
type childConfig struct {
	DatabaseURL string
	AddrFile    string // the child writes its bound address here
	CrashPoint  string // hookPoint, "" for none
	Secret      string
}

// runChild serves the stripe test source as `outbox ingest` does (New,
// NewServer, Start, Stop on SIGTERM), killing itself at CrashPoint.
func runChild(raw string) int {
	var cc childConfig
	if err := json.Unmarshal([]byte(raw), &cc); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 3
	}
	if cc.CrashPoint != "" {
		testHook = func(p hookPoint) {
			if string(p) == cc.CrashPoint {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // SIGKILL is not deliverable to a handler; wait for it
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pool, err := pgxpool.New(ctx, cc.DatabaseURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	defer pool.Close()
	h, err := New(Config{Pool: pool, Sources: []Source{{Name: "stripe", Preset: PresetStripe, Secrets: [][]byte{[]byte(cc.Secret)}}},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	srv := NewServer("127.0.0.1:0", h)
	if err := srv.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	if err := os.WriteFile(cc.AddrFile, []byte(srv.Addr()), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Stop(sctx); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// testBundle is one test's migrated database and handler.
type testBundle struct {
	t    testing.TB
	url  string
	pool *pgxpool.Pool
	h    *Handler
	srv  *httptest.Server
	now  atomic.Int64 // Unix seconds the handler's clock reads
}

const (
	stripeSecret  = "whsec_test_secret"
	githubSecret  = "It's a Secret to Everybody"
	genericSecret = "generic-secret"
)

// testSources are a stripe, a github, a generic mapped and a generic
// raw-only source.
func testSources() []Source {
	return []Source{
		{Name: "stripe", Preset: PresetStripe, Secrets: [][]byte{[]byte("whsec_old"), []byte(stripeSecret)}},
		{Name: "github", Preset: PresetGitHub, Secrets: [][]byte{[]byte(githubSecret)}},
		{Name: "acme", Preset: PresetGeneric, Secrets: [][]byte{[]byte(genericSecret)},
			Signature:  Signature{Header: "X-Acme-Signature", Encoding: "base64", Prefix: "v1="},
			DeliveryID: "header:X-Acme-Delivery",
			Mapping:    Mapping{EntityType: "/kind", EntityID: "/id", Version: "/version", EventType: "/event"}},
		{Name: "raw", Preset: PresetGeneric, Secrets: [][]byte{[]byte(genericSecret)},
			Signature: Signature{Header: "X-Sig"}, DeliveryID: "header:X-Delivery"},
	}
}

func setup(t testing.TB, cfg Config) *testBundle {
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
	b := &testBundle{t: t, url: url, pool: pool}
	b.now.Store(time.Now().Unix())
	cfg.Pool = pool
	if cfg.Sources == nil {
		cfg.Sources = testSources()
	}
	cfg.Now = func() time.Time { return time.Unix(b.now.Load(), 0) }
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	b.h, err = New(cfg)
	require.NoError(t, err)
	b.srv = httptest.NewServer(b.h)
	t.Cleanup(b.srv.Close)
	return b
}

// stripeHeader signs body as Stripe does, at Unix time ts.
func stripeHeader(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.", ts)
	m.Write(body)
	return "t=" + strconv.FormatInt(ts, 10) + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// stripeEvent is a Stripe event body for object id at version created.
func stripeEvent(id, object string, created int64) []byte {
	return fmt.Appendf(nil, `{"id":%q,"object":"event","type":"customer.updated","created":%d,"data":{"object":{"id":%q,"object":"customer","name":"v%d"}}}`,
		id, created, object, created)
}

// post sends body to /webhooks/source with headers and returns the answer.
func (b *testBundle) post(source string, body []byte, headers map[string]string) (int, string, http.Header) {
	b.t.Helper()
	return postTo(b.t, b.srv.URL, source, body, headers)
}

func postTo(t testing.TB, base, source string, body []byte, headers map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/webhooks/"+source, strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(got), resp.Header
}

// postStripe signs and sends a Stripe event now.
func (b *testBundle) postStripe(body []byte) (int, string, http.Header) {
	b.t.Helper()
	return b.post("stripe", body, map[string]string{"Stripe-Signature": stripeHeader(stripeSecret, b.now.Load(), body)})
}

// counts are the rows a delivery may leave.
type counts struct{ raw, records, events, keys, entities int }

func (b *testBundle) counts() counts {
	b.t.Helper()
	var c counts
	err := b.pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM outbox.events WHERE aggregate_type = 'webhook'),
		(SELECT count(*) FROM outbox.events WHERE kind = 'record'),
		(SELECT count(*) FROM outbox.events WHERE kind = 'event' AND aggregate_type <> 'webhook'),
		(SELECT count(*) FROM outbox.idempotency_keys),
		(SELECT count(*) FROM outbox.webhook_entities)`).Scan(&c.raw, &c.records, &c.events, &c.keys, &c.entities)
	require.NoError(b.t, err)
	return c
}

func sqlIn(b *testBundle) sql.DBTX { return sql.InSchema(b.pool, "outbox") }

func getEntity(source, typ, id string) sql.GetWebhookEntityParams {
	return sql.GetWebhookEntityParams{Source: source, EntityType: typ, EntityID: id}
}
