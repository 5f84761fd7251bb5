package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/internal/console"
	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/internal/pgconnect"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
)

// Report is a finished run: the audit, and where the stage logs are.
type Report struct {
	*Audit
	// LogDir holds the stage logs when they were kept: always with
	// Config.LogDir, after a failed run, or with Config.KeepLogs. Empty when
	// the temp log dir was removed.
	LogDir string
}

// String is the audit and, when they were kept, where the logs are.
func (r *Report) String() string {
	s := r.Audit.String()
	if r.LogDir != "" {
		s += "stage logs: " + r.LogDir + "\n"
	}
	return s
}

// Run runs the whole pipeline once: Postgres (Config.DatabaseURL or a
// throwaway cluster), Kafka (existing brokers, kfake or Apache Kafka), the
// order service with a load generator, the mock payment and shipping APIs,
// and the relay, the orders transform and two sinks as child processes of
// Config.Binary; then it stops the stages and audits the run.
//
// out receives the narration as it happens (where Postgres, Kafka and the logs
// are; unless Quiet, a progress line a second and the chaos kills); nil
// discards it. Run returns an error when the demo could not run (an invalid
// Config, Postgres, Kafka or a stage would not start, ctx ended); a run that
// ran returns its Report, whose Pass says whether every check held. A run
// that did not settle within Config.Timeout fails its audit, which says which
// stages were behind.
func Run(ctx context.Context, cfg Config, out io.Writer) (rep *Report, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if out == nil {
		out = io.Discard
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &runner{cfg: cfg, out: out, logger: logger}
	defer func() { r.close(ctx, rep, err) }()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	if err := r.startStages(ctx); err != nil {
		return nil, err
	}
	rep, err = r.drive(ctx)
	if err != nil || rep == nil {
		return rep, err
	}
	if cfg.LingerConsole > 0 && r.consoleURL != "" {
		// The report first, then the console stays up; the stage logs line
		// (set at close) is said when the run ends.
		if cfg.OnReport != nil {
			cfg.OnReport(rep)
		}
		r.linger(ctx)
	}
	return rep, nil
}

// startConsole serves the on-call console over the demo's Postgres and
// Kafka, read-only, and prints its URL. It also picks each stage process's
// metrics address (the stages start later, with --metrics-addr), so the
// console scrapes their /metrics: breaker states, rates, the relay's role.
func (r *runner) startConsole(ctx context.Context) error {
	if r.cfg.ConsoleAddr == "" {
		return nil
	}
	addrs, err := stageMetricsAddrs()
	if err != nil {
		return err
	}
	r.stageMetrics = addrs
	var scrape []string
	for _, name := range stageNames {
		scrape = append(scrape, "http://"+addrs[name]+"/metrics")
	}
	l, err := console.Listen(ctx, console.Config{
		Pool: r.pool, KafkaOpts: r.kopts, Interval: 2 * time.Second, Logger: r.logger,
		JourneyTopics: []string{"commands.payment", "commands.shipping"},
		StageMetrics:  scrape,
		AllowActions:  r.cfg.ConsoleToken != "", Token: r.cfg.ConsoleToken,
	}, r.cfg.ConsoleAddr)
	if err != nil {
		return fmt.Errorf("demo: console: %w", err)
	}
	r.consoleURL = l.URL()
	r.onClose(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Stop(sctx)
	})
	mode := "read-only"
	if r.cfg.ConsoleToken != "" {
		mode = "replay and quarantine allowed with --console-token"
	}
	r.say("console: %s (%s; an order's journey: %sjourney?q=ORDER_ID)", r.consoleURL, mode, r.consoleURL)
	return nil
}

// linger keeps everything up for LingerConsole after the report, so the
// console can be looked at, until ctx ends.
func (r *runner) linger(ctx context.Context) {
	if r.cfg.LingerConsole <= 0 || r.consoleURL == "" {
		return
	}
	// The stages stopped for the audit; they run again so that what the
	// console does (a replay) has its effect, and the pipeline page is live.
	for _, s := range r.stages {
		if err := s.start(); err != nil {
			r.say("demo: restart %s for the console: %v", s.name, err)
		}
	}
	r.say("console: %s stays up for %s, the stages running again (Ctrl-C to end)", r.consoleURL, r.cfg.LingerConsole)
	t := time.NewTimer(r.cfg.LingerConsole)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// runner is one run's state. Everything it starts registers a closer; close
// runs them in reverse, then keeps or removes the log dir.
type runner struct {
	cfg    Config
	logger *slog.Logger

	outMu sync.Mutex // the chaos goroutine narrates too
	out   io.Writer

	closers []func()

	dbURL                   string
	kopts                   []kgo.Opt
	logDir                  string
	pool                    *pgxpool.Pool
	svc                     *OrderService
	payment, shipping       *MockAPI
	orderURL                string
	webhooks                *Webhooks
	stages                  []*stage
	stagesStarted           bool
	paymentURL, shippingURL string
	consoleURL              string
	stageMetrics            map[string]string // stage name -> --metrics-addr, picked by startConsole
}

func (r *runner) say(format string, a ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.out, format+"\n", a...)
}

func (r *runner) onClose(f func()) { r.closers = append(r.closers, f) }

// close stops what the run started. The temp log dir is removed unless the
// run failed (an audit that failed, or a demo that stopped with an error once
// its stages had run and not because ctx ended) or KeepLogs asks to keep it;
// a kept one is named in the report, or in the narration when there is none.
func (r *runner) close(ctx context.Context, rep *Report, err error) {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	if r.logDir == "" {
		return
	}
	failed := (rep != nil && !rep.Pass()) || (err != nil && r.stagesStarted && ctx.Err() == nil)
	if r.cfg.LogDir == "" && !failed && !r.cfg.KeepLogs {
		if err := os.RemoveAll(r.logDir); err != nil {
			r.say("demo: remove %s: %v", r.logDir, err)
		}
		return
	}
	if rep != nil && !(r.cfg.LingerConsole > 0 && r.consoleURL != "" && r.cfg.OnReport != nil) {
		rep.LogDir = r.logDir
	} else if r.stagesStarted {
		r.say("demo: stage logs kept in %s", r.logDir)
	}
}

// setup starts everything but the stages: the ops server, Postgres with the
// migrations, the log dir, Kafka with the topics, the order service and the
// mock APIs.
func (r *runner) setup(ctx context.Context) error {
	ops, err := opsserver.Start(opsserver.Config{Addr: r.cfg.MetricsAddr, Registry: opsserver.NewRegistry(), Logger: r.logger})
	if err != nil {
		return err
	}
	r.onClose(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ops.Stop(sctx)
	})

	if err := r.startPostgres(ctx); err != nil {
		return err
	}

	if r.cfg.LogDir == "" {
		if r.logDir, err = os.MkdirTemp("", "outbox-demo-logs-"); err != nil {
			return fmt.Errorf("demo: log dir: %w", err)
		}
	} else {
		if err := os.MkdirAll(r.cfg.LogDir, 0o755); err != nil {
			return fmt.Errorf("demo: --log-dir: %w", err)
		}
		r.logDir = r.cfg.LogDir
	}

	if err := r.startKafka(ctx); err != nil {
		return err
	}
	if err := r.startServices(ctx); err != nil {
		return err
	}
	return r.startConsole(ctx)
}

func (r *runner) startPostgres(ctx context.Context) error {
	pg, err := pgcluster.Start(ctx, pgcluster.Config{URL: r.cfg.DatabaseURL, Logger: r.logger})
	if err != nil {
		return err
	}
	r.onClose(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pg.Stop(sctx)
	})
	r.dbURL = pg.URL()
	if r.cfg.DatabaseURL == "" {
		name := fmt.Sprintf("outbox_demo_%d", time.Now().Unix())
		if r.dbURL, err = pg.CreateDatabase(ctx, name); err != nil {
			return err
		}
		r.say("postgres: throwaway cluster (%s), database %s", pg.Source(), name)
	} else {
		r.say("postgres: %s", pgconnect.Redact(r.dbURL))
	}
	m, err := migrations.Open(ctx, r.dbURL, "", r.logger)
	if err != nil {
		return err
	}
	_, err = m.Up(ctx)
	m.Close()
	return err
}

// startServices starts the order service, writing through the outbox, and
// the external APIs: payment honours Idempotency-Key, shipping does not.
func (r *runner) startServices(ctx context.Context) error {
	pool, err := pgxpool.New(ctx, r.dbURL)
	if err != nil {
		return fmt.Errorf("demo: pool: %w", err)
	}
	r.onClose(pool.Close)
	r.pool = pool
	if _, err := pool.Exec(ctx, OrdersTable); err != nil {
		return fmt.Errorf("demo: create orders table: %w", err)
	}
	// Large orders (LargeOrder) go to Kafka by reference, their payloads
	// stored in Postgres in the order's own transaction.
	store, err := claimcheck.NewPostgres(claimcheck.PostgresConfig{})
	if err != nil {
		return err
	}
	writer, err := outbox.New(outbox.Config{ClaimCheck: outbox.ClaimCheckConfig{Store: store}})
	if err != nil {
		return err
	}
	r.svc = &OrderService{Pool: pool, Writer: writer, Logger: r.logger}
	if r.orderURL, err = r.serve(r.svc); err != nil {
		return err
	}
	// The acquirer's webhooks come in through ingest's handler, mounted
	// here as a service would: 12 charges of 5 versions, 8 senders.
	secret := newSecret()
	wh, err := newWebhookHandler(pool, secret)
	if err != nil {
		return err
	}
	r.webhooks = &Webhooks{Secret: secret, Charges: 12, Versions: 5, Senders: 8}
	if r.webhooks.URL, err = r.serve(wh); err != nil {
		return err
	}
	r.payment = &MockAPI{Name: "payment", HonoursKeys: true, FailRate: 0.08, RateLimitRate: 0.02, TimeoutRate: 0.02, Delay: 3 * time.Second,
		DeclineEvery: r.cfg.DeclineEvery}
	r.shipping = &MockAPI{Name: "shipping", HonoursKeys: false, FailRate: 0.08, TimeoutRate: 0.02, Delay: 3 * time.Second}
	if r.paymentURL, err = r.serve(r.payment); err != nil {
		return err
	}
	r.shippingURL, err = r.serve(r.shipping)
	return err
}

// serve runs h on a loopback port until the run ends and returns its base URL.
func (r *runner) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("demo: listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	r.onClose(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return "http://" + ln.Addr().String(), nil
}

// startStages starts the stage processes and returns once the relay holds
// its slot: rows committed before the slot exists are not in its stream, so
// orders start only then (in production: start the relay, or create the
// slot, before the writers).
func (r *runner) startStages(ctx context.Context) error {
	bin := r.cfg.Binary
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("demo: find own binary: %w", err)
		}
		bin = self
	}
	r.stages = newStages(bin, r.cfg.StageEnv, r.logDir, stageEndpoints{
		dbURL: r.dbURL, brokers: strings.Join(r.cfg.Kafka.Brokers, ","), paymentURL: r.paymentURL, shippingURL: r.shippingURL,
		metrics: r.stageMetrics,
	})
	r.onClose(func() { stopAll(r.stages, 10*time.Second) })
	r.stagesStarted = true
	for _, s := range r.stages {
		if err := s.start(); err != nil {
			return err
		}
	}
	names := make([]string, len(r.stages))
	for i, s := range r.stages {
		names[i] = s.name
	}
	removed := ""
	if r.cfg.LogDir == "" && !r.cfg.KeepLogs {
		removed = ", removed if the run passes"
	}
	r.say("stages: %s (logs in %s%s)", strings.Join(names, ", "), r.logDir, removed)
	return waitForSlot(ctx, r.pool, relaySlot, time.Minute)
}

// drive places the orders (with chaos while they flow), waits for the
// pipeline to settle or Timeout to pass, stops the stages so they commit what
// they hold, and audits the run from the sources of truth.
func (r *runner) drive(ctx context.Context) (*Report, error) {
	start := time.Now()
	ch := r.startChaos(ctx)
	defer ch.stop()

	load := &Load{URL: r.orderURL, Orders: r.cfg.Orders, Rate: r.cfg.Rate, DuplicateRate: r.cfg.Duplicates}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan LoadResult, 1)
	go func() { loadDone <- load.Run(loadCtx) }()
	whDone := make(chan WebhookResult, 1)
	go func() { whDone <- r.webhooks.Run(loadCtx) }()
	counter := NewCounter(r.dbURL, r.kopts)
	defer counter.Close()

	lr, settled, crashed := r.waitSettled(ctx, counter, start, loadDone, ch)
	if crashed != nil {
		stopLoad()
		if lr == nil {
			<-loadDone
		}
		return nil, crashed
	}
	if lr == nil {
		// Not every order was placed in time, or ctx ended: stop the load and
		// wait for its workers.
		stopLoad()
		res := <-loadDone
		lr = &res
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	kills := ch.stop()
	// The webhooks are few and sent first; they are long done unless ctx
	// or the load's end cancelled them, which the audit then reports.
	whRes := <-whDone
	notSettled := ""
	if !settled {
		notSettled = fmt.Sprintf("the pipeline did not settle within --timeout %s", r.cfg.Timeout)
		r.say("demo: %s; stopping the stages and auditing what is there", notSettled)
	}
	stopAll(r.stages, 15*time.Second)
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	audit, err := counter.Audit(actx, AuditInput{
		Load: *lr, Sent: load, Service: r.svc, Payment: r.payment, Shipping: r.shipping,
		Chaos: r.cfg.Chaos, ChaosKills: kills, Elapsed: time.Since(start), NotSettled: notSettled,
		Webhooks: r.webhooks, WebhookResult: whRes,
	})
	if err != nil {
		return nil, err
	}
	return &Report{Audit: audit}, nil
}

// waitSettled samples the pipeline once a second, with a progress line
// unless Quiet, until every accepted order's commands are final at both
// APIs, Timeout has passed since start, or ctx ended. It returns the load's
// result once the load finished (nil if it did not) and whether it settled,
// or why a stage process ended on its own.
// Chaos stops when the load does: then the pipeline must drain on its own.
func (r *runner) waitSettled(ctx context.Context, counter *Counter, start time.Time, loadDone <-chan LoadResult, ch *chaos) (*LoadResult, bool, error) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := start.Add(r.cfg.Timeout)
	var lr *LoadResult
	for {
		select {
		case <-ctx.Done():
			return lr, false, nil
		case res := <-loadDone:
			lr = &res
			ch.stop()
			continue
		case <-tick.C:
		}
		// A stage that died by itself (a bad flag, a port taken) would leave
		// the demo waiting out its whole timeout: say which, at once.
		for _, s := range r.stages {
			if err := s.failure(); err != nil && ctx.Err() == nil {
				return lr, false, err
			}
		}
		// A sample that cannot be taken (Kafka or Postgres down) must not keep
		// the demo from reaching its deadline.
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := counter.Progress(pctx)
		cancel()
		if err != nil {
			r.logger.Debug("demo: progress", "err", err)
		} else {
			if !r.cfg.Quiet {
				r.say("%5.0fs  %s  | api calls: payment %d, shipping %d", time.Since(start).Seconds(), p, r.payment.Calls(), r.shipping.Calls())
			}
			if lr != nil && p.Settled(int(lr.Accepted)) {
				return lr, true, nil
			}
		}
		if time.Now().After(deadline) {
			return lr, false, nil
		}
	}
}

// chaos SIGKILLs and restarts random stages until stopped.
type chaos struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kills  atomic.Int64
}

// startChaos starts the chaos goroutine when Config.Chaos is set; without
// it the returned chaos does nothing.
func (r *runner) startChaos(ctx context.Context) *chaos {
	ctx, cancel := context.WithCancel(ctx)
	c := &chaos{cancel: cancel}
	if !r.cfg.Chaos {
		return c
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			d := time.Duration(float64(r.cfg.ChaosInterval) * (0.5 + rand.Float64()))
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			s := r.stages[rand.IntN(len(r.stages))]
			if err := s.kill(); err != nil {
				continue
			}
			c.kills.Add(1)
			if !r.cfg.Quiet {
				r.say("chaos: SIGKILL %s", s.name)
			}
			time.Sleep(500 * time.Millisecond)
			if err := s.start(); err != nil {
				r.say("chaos: restart %s: %v", s.name, err)
			}
		}
	}()
	return c
}

// stop ends the chaos, waits for a kill in progress to restart its stage, and
// returns how many kills there were. It may be called more than once.
func (c *chaos) stop() int {
	c.cancel()
	c.wg.Wait()
	return int(c.kills.Load())
}
