package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/internal/pgconnect"
	"github.com/outboxrelay/outbox/sink"
)

// sinkCmd is `outbox sink [run] ...` and `outbox sink status ...`; without
// an action it runs the sink.
func sinkCmd(e *env) *cobra.Command {
	c := sinkRunCmd(e)
	c.Use = "sink"
	c.Short = "call external HTTP APIs at most once per event, with retries and dead letters (run | status)"
	c.AddCommand(sinkRunCmd(e), sinkStatusCmd(e))
	return c
}

// headerFlags collects repeated --header "Name: template" flags.
type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }
func (h headerFlags) Type() string   { return "header" }
func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want \"Name: template\", got %q", v)
	}
	h[strings.TrimSpace(k)] = strings.TrimSpace(val)
	return nil
}

func sinkRunCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "run", Short: "call external HTTP APIs at most once per event, with retries and dead letters", Args: noArgs}
	fs := c.Flags()
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	var kc kafkaconn.Config
	kc.Register(fs)
	cc := registerClaimCheckFlags(fs)
	wf := registerWireFlags(fs, false)
	headers := headerFlags{}
	fs.Var(headers, "header", `request header template, "Name: {{.EventType}}"; repeatable`)
	// A header may carry an API key.
	markSecret(fs, "header")
	var (
		group        = fs.String("group", "outbox-sink", "consumer group")
		instanceID   = fs.String("instance-id", "", "static group membership id, stable per instance, so a restart resumes without a rebalance")
		name         = fs.String("name", "", "sink name in logs and dead letters; defaults to the group")
		topics       = fs.String("topics", "", "source topics, comma separated; required")
		endpoint     = fs.String("endpoint", "api", "endpoint name in the ledger and metrics")
		urlTmpl      = fs.String("url", "", "request URL template over the event, e.g. https://pay.example/v1/charges?order={{.AggregateID}}; required")
		method       = fs.String("method", http.MethodPost, "HTTP method")
		idempotent   = fs.Bool("idempotent", false, "the API honours Idempotency-Key: retry unknown outcomes with the same key")
		reconcileURL = fs.String("reconcile-url", "", "status lookup URL template for unknown outcomes: 2xx landed, 404 never arrived; empty dead-letters them")
		refHeader    = fs.String("provider-ref-header", "", "response header holding the provider's reference, kept in the ledger")
		mode         = fs.String("mode", string(sink.ModeRetryTopics), "retry-topics (retries leave the partition) or ordered (later events of a key wait)")
		timeout      = fs.Duration("timeout", 10*time.Second, "per-call timeout")
		retries      = fs.Int("retries", 5, "retries of retriable failures (timeouts, connection errors, 5xx, 408, 409, 429); -1 for none")
		permRetries  = fs.Int("permanent-retries", 0, "retries of other 4xx before dead-lettering (retry.count=3 gives 4 attempts)")
		initial      = fs.Duration("backoff-initial", time.Second, "first backoff")
		maxBackoff   = fs.Duration("backoff-max", 5*time.Minute, "largest backoff (and Retry-After honoured)")
		multiplier   = fs.Float64("backoff-multiplier", 2, "backoff growth per attempt")
		jitter       = fs.Float64("jitter", 0.2, "random fraction taken off each backoff; -1 for none")
		tiers        = fs.String("retry-tiers", "1s,10s,1m", "retry tier topics by delay: TOPIC.retry.1s, ...")
		rateLimit    = fs.Float64("rate-limit", 0, "calls per second at most; 0 for no limit")
		rateBurst    = fs.Int("rate-burst", 1, "rate limit burst")
		brFailures   = fs.Int("breaker-failures", 5, "consecutive retriable failures that open the circuit breaker; -1 disables it")
		brCooldown   = fs.Duration("breaker-cooldown", 10*time.Second, "how long the breaker stays open before one probe")
		dlt          = fs.String("dead-letter-topic", "", `dead-letter topic; default TOPIC.dlt; "-" disables`)
		concurrency  = fs.Int("concurrency", 0, "calls in flight at most across partitions; 0 means one per partition")
		skipTopics   = fs.Bool("skip-topic-creation", false, "do not create missing retry tier and dead-letter topics")
		shutdown     = fs.Duration("shutdown-timeout", 30*time.Second, "how long a stop may take to finish calls under way")
		metrics      = metricsAddrFlag(fs)
		consoleAddr  = consoleFlag(fs)
		check        = checkFlag(fs)
	)
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if err := requireDatabaseURL(*dbURL); err != nil {
			return err
		}
		if *topics == "" || *urlTmpl == "" {
			return fmt.Errorf("%w: --topics and --url are required", errUsage)
		}
		kopts, err := kc.Opts()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if *instanceID != "" {
			kopts = append(kopts, kgo.InstanceID(*instanceID))
		}
		build, err := sink.NewTemplateRequest(sink.RequestTemplate{Method: *method, URL: *urlTmpl, Headers: headers})
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		var tierDurations []time.Duration
		for _, t := range splitList(*tiers) {
			d, err := time.ParseDuration(t)
			if err != nil {
				return fmt.Errorf("%w: --retry-tiers: %v", errUsage, err)
			}
			tierDurations = append(tierDurations, d)
		}
		ep := sink.Endpoint{
			Name: *endpoint, Topics: splitList(*topics), Request: build, Timeout: *timeout, Idempotent: *idempotent,
			Mode: sink.Mode(*mode), DeadLetterTopic: *dlt, RateBurst: *rateBurst,
			Retry: sink.RetryPolicy{Retries: *retries, PermanentRetries: *permRetries, Initial: *initial, Max: *maxBackoff,
				Multiplier: *multiplier, Jitter: *jitter, Tiers: tierDurations},
			Breaker: sink.BreakerConfig{Failures: *brFailures, Cooldown: *brCooldown},
		}
		if *rateLimit > 0 {
			ep.RateLimit = rate.Limit(*rateLimit)
		}
		if *reconcileURL != "" {
			ep.Reconcile, err = sink.NewLookupReconciler(*reconcileURL, *refHeader, &http.Client{Timeout: *timeout})
			if err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
		}
		if h := *refHeader; h != "" {
			ep.ProviderRef = func(resp *http.Response, _ []byte) string { return resp.Header.Get(h) }
		}
		wire, err := wf.wire()
		if err != nil {
			return err
		}
		resolver, closeResolver, err := cc.resolver(ctx, *dbURL, *schema)
		if err != nil {
			return err
		}
		defer closeResolver()
		reg := opsserver.NewRegistry()
		s, err := sink.New(sink.Config{
			DatabaseURL: *dbURL, Schema: *schema, KafkaOpts: kopts, Group: *group, Name: *name,
			Endpoints: []sink.Endpoint{ep}, Concurrency: *concurrency, SkipTopicCreation: *skipTopics,
			ClaimCheck: resolver, Decoder: decoder(wire), Logger: e.logger, Registerer: reg,
		})
		if err != nil {
			if errors.Is(err, sink.ErrInvalidConfig) {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			return err
		}
		if *check {
			return printEffective(e.stdout, c, e.sources)
		}
		if err := checkPostgres(ctx, *dbURL); err != nil {
			return err
		}
		stopped := e.starting(ctx, c, "database", pgconnect.Redact(*dbURL), "schema", *schema)
		stopOps, err := serveOps(e, *metrics, reg, s.Ready)
		if err != nil {
			return err
		}
		defer stopOps()
		stopConsole, err := startStageConsole(ctx, e, *consoleAddr, *dbURL, *schema, kopts)
		if err != nil {
			return err
		}
		defer stopConsole()
		// The stage's own clients retry every Kafka error forever; a setting
		// that can never work (password, certificate) must end the start
		// instead, while an outage is waited out (kafkaconn.Wait).
		if err := kc.Wait(ctx, e.logger); err != nil {
			return err
		}
		err = s.Run(ctx, *shutdown)
		if err == nil {
			err = ctx.Err()
		}
		return stopped(ctx, err)
	}
	return c
}

func sinkStatusCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "status", Short: "ledger rows per endpoint and status over a window; exit 3 on --alert-on", Args: noArgs}
	fs := c.Flags()
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	since := fs.Duration("since", 24*time.Hour, "count ledger rows updated within this window")
	format := fs.String("format", "text", "text or json")
	alert := fs.String("alert-on", "", "statuses that make the command exit 3 when any row has them, e.g. failed,unknown,dead_lettered")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if err := requireDatabaseURL(*dbURL); err != nil {
			return err
		}
		if err := checkPostgres(ctx, *dbURL); err != nil {
			return err
		}
		pool, err := pgxpool.New(ctx, *dbURL)
		if err != nil {
			return fmt.Errorf("sink status: connect: %w", err)
		}
		defer pool.Close()
		counts, err := sink.Status(ctx, pool, *schema, time.Now().Add(-*since))
		if err != nil {
			return err
		}
		switch *format {
		case "json":
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(counts); err != nil {
				return err
			}
		case "text":
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "ENDPOINT\tSTATUS\tROWS (last %v)\n", *since)
			for _, c := range counts {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", c.Endpoint, c.Status, c.Rows)
			}
			if len(counts) == 0 {
				fmt.Fprintln(tw, "-\t-\t0")
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: --format %q: use text or json", errUsage, *format)
		}
		var hits []string
		for _, st := range splitList(*alert) {
			for _, c := range counts {
				if c.Status == st && c.Rows > 0 {
					hits = append(hits, fmt.Sprintf("%s %s=%d", c.Endpoint, c.Status, c.Rows))
				}
			}
		}
		if len(hits) > 0 {
			return exitError{code: 3, msg: "alert: " + strings.Join(hits, ", ")}
		}
		return nil
	}
	return c
}
