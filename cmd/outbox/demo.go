package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/apachekafka"
	"github.com/outboxrelay/outbox/internal/demo"
	"github.com/outboxrelay/outbox/internal/embedkafka"
	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/internal/pgcluster"
	"github.com/outboxrelay/outbox/internal/topicspec"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
	"github.com/outboxrelay/outbox/sql"
)

// demoTopics are the topics the demo's stages use, created before they start.
var demoTopics = []topicspec.Spec{
	{Name: "outbox.order", Kind: topicspec.KindEvent, Partitions: 3, ReplicationFactor: -1},
	{Name: "outbox.relay.checkpoints", Kind: topicspec.KindCheckpoint, Partitions: 1, ReplicationFactor: -1,
		Configs: map[string]string{"cleanup.policy": "compact"}},
	{Name: "commands.payment", Kind: topicspec.KindCommand, Partitions: 3, ReplicationFactor: -1},
	{Name: "commands.shipping", Kind: topicspec.KindCommand, Partitions: 3, ReplicationFactor: -1},
	{Name: "outbox.transform.dlq", Kind: topicspec.KindDeadLetter, Partitions: 1, ReplicationFactor: -1},
}

// execMainEnv makes a test binary run main's dispatcher (see main_test.go),
// so the demo's stage processes work under `go test` as with the real binary.
const execMainEnv = "OUTBOX_EXEC_MAIN"

// Values of `outbox demo --kafka`.
const (
	demoKafkaKfake  = "kfake"  // franz-go's kfake in the demo process: starts at once
	demoKafkaApache = "apache" // a real one-node Apache Kafka from scripts/kafka.sh
)

type demoConfig struct {
	databaseURL   string
	kafka         kafkaconn.Config
	kafkaKind     string // demoKafkaKfake or demoKafkaApache; unused with --brokers
	orders        int
	rate          float64
	duplicates    float64
	chaos         bool
	chaosInterval time.Duration
	timeout       time.Duration
	logDir        string
	quiet         bool
	metricsAddr   string
}

// runDemo runs the whole pipeline: a throwaway Postgres (or --database-url), an
// in-process kfake or, with --kafka apache, a real Apache Kafka broker started
// for the demo (or existing --brokers), an order service with a load generator, and
// the relay, the orders transform and two sinks as child processes of this
// binary, then prints an audit with a pass/fail line.
func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "demo")
	var cfg demoConfig
	fs.StringVar(&cfg.databaseURL, "database-url", envOr("OUTBOX_DATABASE_URL", ""), "use this Postgres instead of a throwaway cluster (needs wal_level=logical) (env OUTBOX_DATABASE_URL)")
	cfg.kafka.Register(fs)
	fs.StringVar(&cfg.kafkaKind, "kafka", demoKafkaKfake, "the Kafka to start when --brokers is not given: kfake (in-process, instant) or apache (a real one-node Apache Kafka broker from scripts/kafka.sh, needs Java 17+; stopped at the end)")
	fs.IntVar(&cfg.orders, "orders", 300, "orders to place")
	fs.Float64Var(&cfg.rate, "rate", 60, "orders per second")
	fs.Float64Var(&cfg.duplicates, "duplicates", 0.2, "share of orders submitted twice with the same Idempotency-Key")
	fs.BoolVar(&cfg.chaos, "chaos", false, "SIGKILL and restart stage processes at random while orders are placed")
	fs.DurationVar(&cfg.chaosInterval, "chaos-interval", 5*time.Second, "mean time between chaos kills (at least 2s: a killed stage needs time to rejoin)")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "give up waiting for the pipeline to drain after this long")
	fs.StringVar(&cfg.logDir, "log-dir", "", "where stage processes write their logs; defaults to a temp dir")
	fs.BoolVar(&cfg.quiet, "quiet", false, "no live progress view")
	fs.StringVar(&cfg.metricsAddr, "metrics-addr", envOr("OUTBOX_METRICS_ADDR", ""), "serve /metrics /healthz /readyz for the demo process on this address (env OUTBOX_METRICS_ADDR)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.kafkaKind != demoKafkaKfake && cfg.kafkaKind != demoKafkaApache {
		return fmt.Errorf("%w: --kafka %q: use kfake or apache", errUsage, cfg.kafkaKind)
	}
	kafkaSet := false
	fs.Visit(func(f *flag.Flag) { kafkaSet = kafkaSet || f.Name == "kafka" })
	if kafkaSet && len(cfg.kafka.Brokers) > 0 {
		return fmt.Errorf("%w: --kafka %s starts a broker for the demo; --brokers (or OUTBOX_BROKERS) names existing ones: give one of them", errUsage, cfg.kafkaKind)
	}
	if cfg.chaosInterval < 2*time.Second {
		return fmt.Errorf("%w: --chaos-interval %s is below 2s; stages could not rejoin between kills", errUsage, cfg.chaosInterval)
	}
	audit, err := demoRun(ctx, e, cfg)
	if audit != nil {
		fmt.Fprint(e.stdout, audit.String())
	}
	if err != nil {
		return err
	}
	if !audit.Pass() {
		return exitError{code: 1, msg: "audit failed"}
	}
	return nil
}

func demoRun(ctx context.Context, e *env, cfg demoConfig) (*demo.Audit, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOps, err := serveOps(e, cfg.metricsAddr, opsserver.NewRegistry(), nil)
	if err != nil {
		return nil, err
	}
	defer stopOps()
	say := func(format string, a ...any) { fmt.Fprintf(e.stdout, format+"\n", a...) }

	// Postgres.
	pg, err := pgcluster.Start(ctx, pgcluster.Config{URL: cfg.databaseURL, Logger: e.logger})
	if err != nil {
		return nil, err
	}
	defer pg.Stop(context.Background()) //nolint:errcheck
	dbURL := pg.URL()
	if cfg.databaseURL == "" {
		name := fmt.Sprintf("outbox_demo_%d", time.Now().Unix())
		if dbURL, err = pg.CreateDatabase(ctx, name); err != nil {
			return nil, err
		}
		say("postgres: throwaway cluster (%s), database %s", pg.Source(), name)
	} else {
		say("postgres: %s", redactURL(dbURL))
	}
	m, err := migrations.Open(ctx, dbURL, "", e.logger)
	if err != nil {
		return nil, err
	}
	_, err = m.Up(ctx)
	m.Close()
	if err != nil {
		return nil, err
	}

	logDir := cfg.logDir
	if logDir == "" {
		if logDir, err = os.MkdirTemp("", "outbox-demo-logs-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("demo: --log-dir: %w", err)
	}

	// Kafka.
	switch {
	case len(cfg.kafka.Brokers) > 0:
		say("kafka: %s", strings.Join(cfg.kafka.Brokers, ","))
	case cfg.kafkaKind == demoKafkaApache:
		stop, err := startDemoApache(ctx, say, logDir, cfg.logDir != "", &cfg.kafka)
		if err != nil {
			return nil, err
		}
		defer stop()
	default:
		k, err := embedkafka.Start(embedkafka.Config{})
		if err != nil {
			return nil, err
		}
		defer k.Close()
		cfg.kafka.Brokers = k.Brokers()
		say("kafka: embedded kfake at %s", strings.Join(cfg.kafka.Brokers, ","))
	}
	kopts, err := cfg.kafka.Opts()
	if err != nil {
		return nil, err
	}
	if err := ensureTopics(ctx, kopts, demoTopics); err != nil {
		return nil, err
	}

	// The order service, writing through the outbox.
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("demo: pool: %w", err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, demo.OrdersTable); err != nil {
		return nil, fmt.Errorf("demo: create orders table: %w", err)
	}
	writer, err := outbox.New(outbox.Config{})
	if err != nil {
		return nil, err
	}
	svc := &demo.OrderService{Pool: pool, Writer: writer, Logger: e.logger}
	orderURL, stopOrders, err := serve(svc)
	if err != nil {
		return nil, err
	}
	defer stopOrders()

	// The external APIs: payment honours Idempotency-Key, shipping does not.
	payment := &demo.MockAPI{Name: "payment", HonoursKeys: true, FailRate: 0.08, RateLimitRate: 0.02, TimeoutRate: 0.02, Delay: 3 * time.Second}
	shipping := &demo.MockAPI{Name: "shipping", HonoursKeys: false, FailRate: 0.08, TimeoutRate: 0.02, Delay: 3 * time.Second}
	paymentURL, stopPayment, err := serve(payment)
	if err != nil {
		return nil, err
	}
	defer stopPayment()
	shippingURL, stopShipping, err := serve(shipping)
	if err != nil {
		return nil, err
	}
	defer stopShipping()

	// The stages, as child processes of this binary.
	brokers := strings.Join(cfg.kafka.Brokers, ",")
	stages := []*stageProc{
		{name: "relay", args: []string{"relay", "--database-url", dbURL, "--brokers", brokers, "--create-topics", "--heartbeat", "2s", "--shutdown-timeout", "5s"}},
		{name: "transform", args: []string{"transform", "--brokers", brokers, "--group", "demo-transform", "--input", "outbox.order", "--transactional-id", "demo-transform-1",
			// A SIGKILLed member holds its partitions until its session times out;
			// a short one lets chaos restarts resume in seconds. 6s is the floor
			// of Apache Kafka's group.min.session.timeout.ms (default), so a real
			// broker accepts it (kfake takes any value).
			"--session-timeout", "6s", "--transaction-timeout", "5s"}},
		{name: "sink-payment", args: demoSinkArgs(dbURL, brokers, "payment", paymentURL, true)},
		{name: "sink-shipping", args: demoSinkArgs(dbURL, brokers, "shipping", shippingURL, false)},
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("demo: find own binary: %w", err)
	}
	for _, s := range stages {
		s.bin, s.logPath = self, filepath.Join(logDir, s.name+".log")
		if err := s.start(); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, s := range stages {
			s.stop(10 * time.Second)
		}
	}()
	say("stages: relay, transform, sink-payment, sink-shipping (logs in %s)", logDir)
	// Rows committed before the relay's slot exists are not in its stream, so
	// orders start only once the relay holds the slot (in production: start the
	// relay, or create the slot, before the writers).
	if err := waitForSlot(ctx, pool, "outbox_relay", time.Minute); err != nil {
		return nil, err
	}

	var chaosWG sync.WaitGroup
	chaosCtx, stopChaos := context.WithCancel(ctx)
	kills := 0
	if cfg.chaos {
		chaosWG.Add(1)
		go func() {
			defer chaosWG.Done()
			for {
				d := time.Duration(float64(cfg.chaosInterval) * (0.5 + rand.Float64()))
				select {
				case <-chaosCtx.Done():
					return
				case <-time.After(d):
				}
				s := stages[rand.IntN(len(stages))]
				if err := s.kill(); err == nil {
					kills++
					if !cfg.quiet {
						say("chaos: SIGKILL %s", s.name)
					}
					time.Sleep(500 * time.Millisecond)
					if err := s.start(); err != nil {
						say("chaos: restart %s: %v", s.name, err)
					}
				}
			}
		}()
	}

	// Load, with a live progress view.
	load := &demo.Load{URL: orderURL, Orders: cfg.orders, Rate: cfg.rate, DuplicateRate: cfg.duplicates}
	start := time.Now()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan demo.LoadResult, 1)
	go func() { loadDone <- load.Run(loadCtx) }()
	counter := demo.NewCounter(dbURL, kopts)
	defer counter.Close()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.Now().Add(cfg.timeout)
	var lr *demo.LoadResult
	settled := false
	for !settled {
		select {
		case <-ctx.Done():
			stopChaos()
			chaosWG.Wait()
			return nil, ctx.Err()
		case r := <-loadDone:
			lr = &r
			// Chaos runs while orders flow; then the pipeline must drain on its own.
			stopChaos()
			continue
		case <-tick.C:
		}
		// A sample that cannot be taken (Kafka or Postgres down) must not keep
		// the demo from reaching its deadline.
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := counter.Progress(pctx)
		cancel()
		if err != nil {
			e.logger.Debug("demo: progress", "err", err)
		} else {
			if !cfg.quiet {
				say("%5.0fs  %s  | api calls: payment %d, shipping %d", time.Since(start).Seconds(), p, payment.Calls(), shipping.Calls())
			}
			settled = lr != nil && p.Settled(int(lr.Accepted))
		}
		if !settled && time.Now().After(deadline) {
			break
		}
	}
	stopChaos()
	chaosWG.Wait()
	notSettled := ""
	if !settled {
		notSettled = fmt.Sprintf("the pipeline did not settle within --timeout %s", cfg.timeout)
		say("demo: %s; auditing what is there", notSettled)
		if lr == nil {
			stopLoad()
			r := <-loadDone
			lr = &r
		}
	}
	// Let the stages commit what they hold, then audit from the sources of truth.
	for _, s := range stages {
		s.stop(15 * time.Second)
	}
	audit, err := counter.Audit(ctx, demo.AuditInput{
		Load: *lr, Sent: load, Service: svc, Payment: payment, Shipping: shipping, ChaosKills: kills, Elapsed: time.Since(start),
		NotSettled: notSettled,
	})
	return audit, err
}

// startDemoApache starts a one-node Apache Kafka for the demo in a new folder
// under logDir, points kc at it, and returns the func that stops it and, unless
// keep, removes the folder. On one node every topic gets replication factor 1
// (the broker's default.replication.factor); the broker does not auto-create
// topics, so the demo and its stages create each one explicitly.
func startDemoApache(ctx context.Context, say func(string, ...any), logDir string, keep bool, kc *kafkaconn.Config) (func(), error) {
	dir, err := os.MkdirTemp(logDir, "kafka-")
	if err != nil {
		return nil, err
	}
	say("kafka: starting Apache Kafka (one node) in %s", dir)
	began := time.Now()
	// The JVM's start is bounded; a cancelled demo stops waiting at once.
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	k, err := apachekafka.Start(startCtx, apachekafka.Config{Dir: dir})
	if err != nil {
		// A start that failed or was cancelled half way may leave a JVM that
		// no watcher stops yet: stop whatever the folder holds.
		if script, serr := apachekafka.Script(); serr == nil {
			_ = exec.Command("bash", script, "stop", dir).Run()
		}
		if !keep {
			_ = os.RemoveAll(dir)
		}
		return nil, err
	}
	kc.Brokers = k.Plaintext
	say("kafka: Apache Kafka at %s (transaction.version %d), up in %s", strings.Join(k.Plaintext, ","), k.TransactionVersion, time.Since(began).Round(100*time.Millisecond))
	return func() {
		if err := k.Stop(); err != nil {
			say("kafka: stop Apache Kafka: %v (its folder %s is kept)", err, dir)
			return
		}
		if keep {
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			say("kafka: remove %s: %v", dir, err)
		}
	}, nil
}

func waitForSlot(ctx context.Context, pool *pgxpool.Pool, slot string, max time.Duration) error {
	deadline := time.Now().Add(max)
	for {
		if _, err := sql.New().RelaySlot(ctx, pool, slot); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the relay did not create slot %s within %s; see its log", slot, max)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serve runs h on a loopback port and returns its base URL.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("demo: listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

func redactURL(s string) string {
	if i := strings.Index(s, "@"); i > 0 {
		if j := strings.Index(s, "://"); j > 0 && j < i {
			return s[:j+3] + "***" + s[i:]
		}
	}
	return s
}

// stageProc is one stage run as a child process of this binary.
type stageProc struct {
	name, bin, logPath string
	args               []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (s *stageProc) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("demo: %s log: %w", s.name, err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), execMainEnv+"=1")
	// The stage dies with the demo, whatever kills the demo.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("demo: start %s: %w", s.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	return nil
}

func (s *stageProc) kill() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return errors.New("not running")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-done
	return nil
}

// stop sends SIGTERM and waits up to grace, then SIGKILLs.
func (s *stageProc) stop(grace time.Duration) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// demoSinkArgs are the `outbox sink` arguments for one of the demo's APIs.
// Backoffs are short and there is one retry tier so the demo settles in
// seconds; the 1s call timeout is below the mock APIs' 3s "slow" answers, so
// some calls end with their outcome unknown, as in production.
func demoSinkArgs(dbURL, brokers, name, apiURL string, idempotent bool) []string {
	topic := "commands." + name
	args := []string{"sink", "--database-url", dbURL, "--brokers", brokers,
		"--group", "demo-sink-" + name, "--instance-id", "demo-sink-" + name, "--topics", topic, "--endpoint", name,
		"--url", apiURL + "/" + name + "s", fmt.Sprintf("--idempotent=%t", idempotent),
		"--reconcile-url", apiURL + "/status/{{.ID}}",
		"--timeout", "1s", "--retries", "8", "--backoff-initial", "200ms", "--backoff-max", "2s",
		"--retry-tiers", "1s", "--breaker-failures", "20", "--breaker-cooldown", "1s", "--shutdown-timeout", "5s"}
	return args
}
