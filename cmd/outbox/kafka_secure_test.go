package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/demo/apachekafka"
	"github.com/outboxrelay/outbox/internal/ops/kafkaread"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/outbox"
)

// The tests here run the real binary against a real Apache Kafka whose client
// listener is SASL_SSL (SCRAM-SHA-512 over TLS with the harness's own CA), as
// a production cluster would be: every Kafka-facing command connects with the
// flags or with the OUTBOX_KAFKA_* variables, and bad credentials or trust
// settings end the command at once with a line that says what to fix.

var (
	secureOnce    sync.Once
	secureCluster *apachekafka.Cluster
	secureErr     error

	binOnce sync.Once
	binPath string
	binErr  error
)

// secureKafka is the SASL_SSL cluster this test binary shares (one JVM for
// every test here: the machine runs other JVM-heavy suites at the same time).
// TestMain stops it.
func secureKafka(t *testing.T) *apachekafka.Cluster {
	t.Helper()
	secureOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		secureCluster, secureErr = apachekafka.Start(ctx, apachekafka.Config{TLSSASL: true})
	})
	if secureErr != nil {
		t.Fatalf("this test needs Apache Kafka with --tls-sasl: %v", secureErr)
	}
	return secureCluster
}

// stopSecureKafka stops the shared cluster, if a test started it, and
// removes the built binary.
func stopSecureKafka() {
	if secureCluster != nil {
		_ = secureCluster.Stop()
		_ = os.RemoveAll(secureCluster.Dir)
	}
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
}

// outboxBinary builds cmd/outbox once per test binary (TestMain removes it):
// the tests exec the binary users run, not this test binary re-entering main.
func outboxBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "outbox-bin-*")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "outbox")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("build cmd/outbox: %v", binErr)
	}
	return binPath
}

// childEnv is this process's environment without any OUTBOX_* setting (a
// developer's shell must not leak into the test), plus vars.
func childEnv(vars map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OUTBOX_") {
			env = append(env, kv)
		}
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// merge returns a copy of base with over applied; an empty value removes the key.
func merge(base map[string]string, over map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// secureFlags are the flags that reach the SASL_SSL listener, password included.
func secureFlags(k *apachekafka.Cluster) []string {
	return []string{
		"--brokers", strings.Join(k.Brokers, ","),
		"--kafka-tls",
		"--kafka-tls-ca", k.Env["OUTBOX_KAFKA_TLS_CA"],
		"--kafka-sasl-mechanism", k.Env["OUTBOX_KAFKA_SASL_MECHANISM"],
		"--kafka-sasl-user", k.Env["OUTBOX_KAFKA_SASL_USER"],
		"--kafka-sasl-password", k.Env["OUTBOX_KAFKA_SASL_PASSWORD"],
	}
}

// syncBuffer is a bytes.Buffer a child process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is how one run of the binary ended.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// runBinary runs `outbox args...` to its end, bounded by limit.
func runBinary(t *testing.T, env map[string]string, limit time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, outboxBinary(t), args...)
	cmd.Env = childEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(began)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("outbox %s still running after %s\nstderr:\n%s", args[0], limit, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("outbox %s: %v", args[0], err)
	}
	return r
}

// stage is a long-running `outbox` child process.
type stage struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	err            error
}

// startStage starts `outbox args...`; the test's end SIGKILLs it if the test
// did not stop it.
func startStage(t *testing.T, env map[string]string, args ...string) *stage {
	t.Helper()
	s := &stage{name: args[0], stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(outboxBinary(t), args...)
	s.cmd.Env = childEnv(env)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	require.NoError(t, s.cmd.Start(), "start outbox %s", s.name)
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("outbox %s stderr:\n%s", s.name, s.stderr.String())
		}
	})
	return s
}

// running fails the test if the stage has exited.
func (s *stage) running(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
		t.Fatalf("outbox %s exited early (%v)\nstderr:\n%s", s.name, s.err, s.stderr.String())
	default:
	}
}

// stop sends SIGTERM and requires a clean exit (status 0) within limit.
func (s *stage) stop(t *testing.T, limit time.Duration) {
	t.Helper()
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-s.done:
	case <-time.After(limit):
		t.Fatalf("outbox %s did not stop within %s of SIGTERM\nstderr:\n%s", s.name, limit, s.stderr.String())
	}
	require.NoError(t, s.err, "outbox %s exit after SIGTERM\nstderr:\n%s", s.name, s.stderr.String())
}

// eventually polls cond every 200ms until it returns nil or limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readCommitted reads topic over the SASL_SSL listener as a read_committed consumer.
func readCommitted(t *testing.T, k *apachekafka.Cluster, topic string) []*kgo.Record {
	t.Helper()
	opts, err := k.SecureOpts()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := kafkaread.ReadCommitted(ctx, opts, topic)
	require.NoError(t, err, "read %s", topic)
	return recs
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// relayBundle is a migrated database with the relay streaming it into the
// secure cluster.
type relayBundle struct {
	kafka  *apachekafka.Cluster
	dbURL  string
	pool   *pgxpool.Pool
	writer *outbox.Writer
	relay  *stage
}

// startSecureRelay migrates a fresh database with the binary, applies
// deploy/topics.yaml with the flags, and starts the relay with the
// environment variables only, waiting until it holds its slot (a logical
// slot sees only what commits after it exists).
func startSecureRelay(t *testing.T, k *apachekafka.Cluster) *relayBundle {
	t.Helper()
	b := &relayBundle{kafka: k, dbURL: pgtest.NewDatabase(t)}
	r := runBinary(t, nil, time.Minute, "migrate", "--database-url", b.dbURL, "up")
	require.Equal(t, 0, r.code, "migrate up\nstderr:\n%s", r.stderr)

	// topics apply is idempotent, so tests sharing the cluster may all run it.
	r = runBinary(t, nil, time.Minute, append([]string{"topics", "apply", "-f", "../../deploy/topics.yaml", "--replication-factor", "1"}, secureFlags(k)...)...)
	require.Equal(t, 0, r.code, "topics apply over SASL_SSL with flags\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	require.Regexp(t, `applied [0-9]+ change\(s\)|0 change\(s\), [0-9]+ topic\(s\) up to date`, r.stdout, "topics apply created the topics, or found them made by another test")

	ctx := context.Background()
	var err error
	b.pool, err = pgxpool.New(ctx, b.dbURL)
	require.NoError(t, err)
	t.Cleanup(b.pool.Close)
	b.writer, err = outbox.New(outbox.Config{})
	require.NoError(t, err)

	// Slots are per Postgres cluster, which the test binary shares: a unique
	// slot name and transactional id per test.
	slot := fmt.Sprintf("sec_%d_%s", os.Getpid(), strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name())))
	if len(slot) > 60 {
		slot = slot[:60]
	}
	env := merge(k.Env, map[string]string{
		"OUTBOX_DATABASE_URL":           b.dbURL,
		"OUTBOX_SLOT":                   slot,
		"OUTBOX_RELAY_TRANSACTIONAL_ID": "outbox-relay-" + slot,
	})
	b.relay = startStage(t, env, "relay", "--heartbeat", "1s")
	waitSlotActive(ctx, t, b.pool, b.relay, slot)
	return b
}

// writeOrders commits n order.created events in one Postgres transaction and
// returns their ids.
func (b *relayBundle) writeOrders(t *testing.T, n int, correlation string) []string {
	t.Helper()
	return b.writeOrdersTo(t, "", n, correlation)
}

// writeOrdersTo is writeOrders routed to topic ("" for the relay's default);
// aggregate ids are o-CORRELATION-I.
func (b *relayBundle) writeOrdersTo(t *testing.T, topic string, n int, correlation string) []string {
	t.Helper()
	ctx := outbox.WithCorrelationID(context.Background(), correlation)
	events := make([]outbox.Event, n)
	for i := range events {
		id := fmt.Sprintf("o-%s-%d", correlation, i)
		events[i] = outbox.Event{
			AggregateType: "order", AggregateID: id, EventType: "order.created", Topic: topic,
			Payload: fmt.Appendf(nil, `{"order_id":%q,"customer_id":"c-%d","amount_cents":%d,"currency":"EUR"}`, id, i, 100+i),
		}
	}
	var ids []string
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		got, err := b.writer.Write(ctx, tx, events...)
		for _, id := range got {
			ids = append(ids, id.String())
		}
		return err
	})
	require.NoError(t, err)
	return ids
}

// eventIDs returns the event_id header of recs, sorted.
func eventIDs(recs []*kgo.Record) []string {
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		ids = append(ids, header(r, envelope.HeaderEventID))
	}
	sort.Strings(ids)
	return ids
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// requireNoSecret fails when the password shows in any output.
func requireNoSecret(t *testing.T, what, output string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		require.NotEmpty(t, s)
		if strings.Contains(output, s) {
			t.Fatalf("%s prints the SASL password", what)
		}
	}
}

// TestSecureKafkaPipeline runs every Kafka-facing command of the binary
// against the SASL_SSL listener: topics apply, relay, transform, sink, lag and
// dlq list, some configured by flags and some by OUTBOX_KAFKA_* variables,
// and checks the events arrive at each step. The transform starts while its
// bootstrap address is down and must wait, not exit, then work once it is up.
func TestSecureKafkaPipeline(t *testing.T) {
	t.Parallel()
	k := secureKafka(t)
	password := k.Env["OUTBOX_KAFKA_SASL_PASSWORD"]
	b := startSecureRelay(t, k)

	ids := append(b.writeOrders(t, 3, "first"), b.writeOrders(t, 2, "second")...)
	// An order.created whose payload the orders transform cannot decode: its
	// dead letter is what `outbox dlq list` must find.
	var badID string
	require.NoError(t, pgx.BeginFunc(context.Background(), b.pool, func(tx pgx.Tx) error {
		got, err := b.writer.Write(context.Background(), tx, outbox.Event{
			AggregateType: "order", AggregateID: "o-bad", EventType: "order.created",
			ContentType: "text/plain", Payload: []byte("not json"),
		})
		if len(got) == 1 {
			badID = got[0].String()
		}
		return err
	}))
	all := sorted(append(append([]string{}, ids...), badID))

	eventually(t, time.Minute, "relay publishes 6 events to outbox.order", func() error {
		if got := eventIDs(readCommitted(t, k, "outbox.order")); !equal(got, all) {
			return fmt.Errorf("event ids %v, want %v", got, all)
		}
		return nil
	})

	// The transform's bootstrap address refuses connections at first (a
	// broker outage at start): it must keep waiting, then work.
	proxy := newLateProxy(t, k.Brokers[0])
	tf := startStage(t, nil, append([]string{"transform", "--group", "sec-transform", "--transactional-id", "sec-transform-1",
		"--brokers", proxy.addr}, secureFlags(k)[2:]...)...)
	eventually(t, 30*time.Second, "transform logs that Kafka is not reachable yet", func() error {
		tf.running(t)
		if !strings.Contains(tf.stderr.String(), "kafka: not reachable at start; retrying") {
			return errors.New("no retry line in its log yet")
		}
		return nil
	})
	tf.running(t)
	proxy.open(t)

	eventually(t, 90*time.Second, "transform produces 5 payment and 5 shipping commands", func() error {
		tf.running(t)
		pay, ship := readCommitted(t, k, "commands.payment"), readCommitted(t, k, "commands.shipping")
		if len(pay) != 5 || len(ship) != 5 {
			return fmt.Errorf("%d payment, %d shipping commands", len(pay), len(ship))
		}
		var causes []string
		for _, r := range pay {
			causes = append(causes, header(r, envelope.HeaderCausationID))
		}
		if got, want := sorted(causes), sorted(ids); !equal(got, want) {
			return fmt.Errorf("payment commands caused by %v, want %v", got, want)
		}
		return nil
	})

	// The sink reaches Kafka through the environment only.
	var mu sync.Mutex
	keys := map[string]int{}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		keys[r.Header.Get("Idempotency-Key")]++
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(api.Close)
	sk := startStage(t, merge(k.Env, map[string]string{"OUTBOX_DATABASE_URL": b.dbURL}),
		"sink", "--group", "sec-sink", "--endpoint", "payment", "--topics", "commands.payment", "--url", api.URL+"/charges", "--idempotent")
	eventually(t, 90*time.Second, "sink calls the API once per payment command", func() error {
		sk.running(t)
		mu.Lock()
		defer mu.Unlock()
		if len(keys) != 5 {
			return fmt.Errorf("%d distinct idempotency keys: %v", len(keys), keys)
		}
		return nil
	})

	// lag with flags, one shot: the transform's group has consumed outbox.order.
	eventually(t, 30*time.Second, "lag reports the transform's group", func() error {
		r := runBinary(t, nil, time.Minute, append([]string{"lag", "--group", "sec-transform", "--window", "1", "--fail-on", "none", "--json"}, secureFlags(k)...)...)
		requireNoSecret(t, "outbox lag", r.stdout+r.stderr, password)
		if r.code != 0 {
			return fmt.Errorf("exit %d: %s", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, `"group":"sec-transform"`) || !strings.Contains(r.stdout, `"topic":"outbox.order"`) {
			return fmt.Errorf("lag output lacks the group's outbox.order partitions: %s", r.stdout)
		}
		return nil
	})

	// dlq list through the environment: the undecodable order is there.
	r := runBinary(t, k.Env, time.Minute, "dlq", "list", "--topic", "outbox.transform.dlq", "--json")
	require.Equal(t, 0, r.code, "dlq list\nstderr:\n%s", r.stderr)
	require.Contains(t, r.stdout, badID, "dlq list shows the rejected event")
	require.Equal(t, 1, strings.Count(r.stdout, "\n"), "one dead letter:\n%s", r.stdout)
	requireNoSecret(t, "outbox dlq list", r.stdout+r.stderr, password)

	for _, s := range []*stage{sk, tf, b.relay} {
		s.stop(t, 30*time.Second)
		requireNoSecret(t, "outbox "+s.name, s.stdout.String()+s.stderr.String(), password)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// lateProxy is a TCP forwarder on a port that refuses connections until
// open: a bootstrap broker that is down when a stage starts and comes back.
type lateProxy struct {
	addr, target string
}

func newLateProxy(t *testing.T, target string) *lateProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &lateProxy{addr: ln.Addr().String(), target: target}
	require.NoError(t, ln.Close())
	return p
}

// open starts listening on the proxy's port and forwarding to the target.
func (p *lateProxy) open(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(t, err, "reopen the proxy port (another process took it?)")
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
}

// TestSecureKafkaBadSettingsFailFast runs each Kafka-facing command with a
// wrong password, with no CA (the harness's CA is not in the system pool) and
// with another CA, by flags and by environment: each must exit 1 within
// seconds with one line that names the problem and the setting to fix, and
// never print the password. Before the start-up check the long-running
// stages retried such errors forever.
func TestSecureKafkaBadSettingsFailFast(t *testing.T) {
	t.Parallel()
	k := secureKafka(t)
	password := k.Env["OUTBOX_KAFKA_SASL_PASSWORD"]
	const wrongPassword = "not-the-password-8f3a"
	otherCA := writeOtherCA(t)
	dbURL := pgtest.NewDatabase(t)

	commands := map[string][]string{
		"relay":     {"relay", "--database-url", dbURL, "--slot", fmt.Sprintf("bad_%d", os.Getpid())},
		"transform": {"transform", "--group", "bad-transform"},
		"sink":      {"sink", "--database-url", dbURL, "--topics", "commands.payment", "--url", "http://127.0.0.1:1/never"},
		"lag":       {"lag", "--window", "1"},
		"dlq":       {"dlq", "list", "--topic", "outbox.transform.dlq"},
		"topics":    {"topics", "apply", "-f", "../../deploy/topics.yaml", "--replication-factor", "1", "--dry-run"},
	}
	authLine := `kafka: authentication failed: Kafka at ` + k.Brokers[0] + ` rejected the SCRAM-SHA-512 credentials of user "outbox": check --kafka-sasl-user and --kafka-sasl-password (env OUTBOX_KAFKA_SASL_USER, OUTBOX_KAFKA_SASL_PASSWORD)`
	noCALine := `kafka: TLS failed: the certificate of Kafka at ` + k.Brokers[0] + ` is signed by an authority this client does not trust (no --kafka-tls-ca given, so only the system's CAs are trusted): pass the CA that signed it with --kafka-tls-ca FILE (env OUTBOX_KAFKA_TLS_CA)`
	otherCALine := `kafka: TLS failed: the certificate of Kafka at ` + k.Brokers[0] + ` is signed by an authority this client does not trust (it is not signed by a CA in ` + otherCA + `): pass the CA that signed it with --kafka-tls-ca FILE (env OUTBOX_KAFKA_TLS_CA)`
	cases := []struct {
		name  string
		env   map[string]string
		flags []string
		line  string
	}{
		{"wrong password by env", merge(k.Env, map[string]string{"OUTBOX_KAFKA_SASL_PASSWORD": wrongPassword}), nil, authLine},
		{"wrong password by flag", k.Env, []string{"--kafka-sasl-password", wrongPassword}, authLine},
		{"no CA", merge(k.Env, map[string]string{"OUTBOX_KAFKA_TLS_CA": ""}), nil, noCALine},
		{"another CA by flag", k.Env, []string{"--kafka-tls-ca", otherCA}, otherCALine},
	}
	for _, c := range cases {
		for name, args := range commands {
			t.Run(c.name+"/"+name, func(t *testing.T) {
				r := runBinary(t, c.env, time.Minute, append(append([]string{}, args...), c.flags...)...)
				t.Logf("exit %d after %s: %s", r.code, r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
				require.Equal(t, 1, r.code, "exit status\nstderr:\n%s", r.stderr)
				require.Less(t, r.took, 8*time.Second, "a bad setting must end the command within seconds, not be retried")
				lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
				require.Equal(t, commandPath(t, args)+": "+c.line, lines[len(lines)-1], "the error line")
				require.NotContains(t, r.stderr, "level=ERROR", "no client retry log before the error")
				requireNoSecret(t, "outbox "+name, r.stdout+r.stderr, password, wrongPassword)
			})
		}
	}
}

// TestSecureKafkaUnreachableAtStart pins the choice for a broker that does
// not answer at start: one-shot commands (lag, dlq, topics) fail at once with
// "no broker reachable", since their caller is waiting for an answer; the
// long-running stages wait and retry (TestSecureKafkaPipeline shows the
// transform then works), because an outage is not a bad configuration.
func TestSecureKafkaUnreachableAtStart(t *testing.T) {
	t.Parallel()
	closed := newLateProxy(t, "").addr
	for name, args := range map[string][]string{
		"lag":    {"lag", "--window", "1"},
		"dlq":    {"dlq", "list", "--topic", "outbox.transform.dlq"},
		"topics": {"topics", "apply", "-f", "../../deploy/topics.yaml", "--dry-run"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runBinary(t, nil, time.Minute, append(args, "--brokers", closed)...)
			require.Equal(t, 1, r.code, "stderr:\n%s", r.stderr)
			require.Less(t, r.took, 8*time.Second)
			require.Contains(t, r.stderr, commandPath(t, args)+": kafka: no broker reachable: cannot connect to Kafka at "+closed+": connect: connection refused")
		})
	}
	t.Run("relay waits", func(t *testing.T) {
		s := startStage(t, nil, "relay", "--database-url", pgtest.NewDatabase(t), "--brokers", closed)
		eventually(t, 30*time.Second, "relay logs that it retries", func() error {
			s.running(t)
			if n := strings.Count(s.stderr.String(), "kafka: not reachable at start; retrying"); n < 2 {
				return fmt.Errorf("%d retry lines", n)
			}
			return nil
		})
		s.stop(t, 10*time.Second)
	})
}

// writeOtherCA writes a self-signed CA certificate that did not sign the
// broker's certificate.
func writeOtherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the outbox test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return path
}
