package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/sink"
)

// runSink dispatches `outbox sink [run] ...` and `outbox sink status ...`.
func runSink(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "run":
			return runSinkRun(ctx, e, args[1:])
		case "status":
			return runSinkStatus(ctx, e, args[1:])
		}
	}
	return runSinkRun(ctx, e, args)
}

// headerFlags collects repeated --header "Name: template" flags.
type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }
func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want \"Name: template\", got %q", v)
	}
	h[strings.TrimSpace(k)] = strings.TrimSpace(val)
	return nil
}

func runSinkRun(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "sink run")
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	var kc kafkaconn.Config
	kc.Register(fs)
	headers := headerFlags{}
	fs.Var(headers, "header", `request header template, "Name: {{.EventType}}"; repeatable`)
	var (
		group        = fs.String("group", envOr("OUTBOX_SINK_GROUP", "outbox-sink"), "consumer group (env OUTBOX_SINK_GROUP)")
		instanceID   = fs.String("instance-id", envOr("OUTBOX_SINK_INSTANCE_ID", ""), "static group membership id, stable per instance, so a restart resumes without a rebalance (env OUTBOX_SINK_INSTANCE_ID)")
		name         = fs.String("name", envOr("OUTBOX_SINK_NAME", ""), "sink name in logs and dead letters; defaults to the group (env OUTBOX_SINK_NAME)")
		topics       = fs.String("topics", envOr("OUTBOX_SINK_TOPICS", ""), "source topics, comma separated (env OUTBOX_SINK_TOPICS); required")
		endpoint     = fs.String("endpoint", envOr("OUTBOX_SINK_ENDPOINT", "api"), "endpoint name in the ledger and metrics (env OUTBOX_SINK_ENDPOINT)")
		urlTmpl      = fs.String("url", envOr("OUTBOX_SINK_URL", ""), "request URL template over the event, e.g. https://pay.example/v1/charges?order={{.AggregateID}} (env OUTBOX_SINK_URL); required")
		method       = fs.String("method", envOr("OUTBOX_SINK_METHOD", http.MethodPost), "HTTP method (env OUTBOX_SINK_METHOD)")
		idempotent   = fs.Bool("idempotent", envOr("OUTBOX_SINK_IDEMPOTENT", "") == "true", "the API honours Idempotency-Key: retry unknown outcomes with the same key (env OUTBOX_SINK_IDEMPOTENT=true)")
		reconcileURL = fs.String("reconcile-url", envOr("OUTBOX_SINK_RECONCILE_URL", ""), "status lookup URL template for unknown outcomes: 2xx landed, 404 never arrived; empty dead-letters them (env OUTBOX_SINK_RECONCILE_URL)")
		refHeader    = fs.String("provider-ref-header", envOr("OUTBOX_SINK_PROVIDER_REF_HEADER", ""), "response header holding the provider's reference, kept in the ledger (env OUTBOX_SINK_PROVIDER_REF_HEADER)")
		mode         = fs.String("mode", envOr("OUTBOX_SINK_MODE", string(sink.ModeRetryTopics)), "retry-topics (retries leave the partition) or ordered (later events of a key wait) (env OUTBOX_SINK_MODE)")
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
		dlt          = fs.String("dead-letter-topic", envOr("OUTBOX_SINK_DLT", ""), `dead-letter topic; default TOPIC.dlt; "-" disables (env OUTBOX_SINK_DLT)`)
		concurrency  = fs.Int("concurrency", 0, "calls in flight at most across partitions; 0 means one per partition")
		skipTopics   = fs.Bool("skip-topic-creation", false, "do not create missing retry tier and dead-letter topics")
		shutdown     = fs.Duration("shutdown-timeout", 30*time.Second, "how long a stop may take to finish calls under way")
		metrics      = fs.String("metrics-addr", envOr("OUTBOX_METRICS_ADDR", ""), "serve /metrics /healthz /readyz on this address, e.g. :9090 (env OUTBOX_METRICS_ADDR)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
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
	reg := opsserver.NewRegistry()
	s, err := sink.New(sink.Config{
		DatabaseURL: *dbURL, Schema: *schema, KafkaOpts: kopts, Group: *group, Name: *name,
		Endpoints: []sink.Endpoint{ep}, Concurrency: *concurrency, SkipTopicCreation: *skipTopics,
		Logger: e.logger, Registerer: reg,
	})
	if err != nil {
		if errors.Is(err, sink.ErrInvalidConfig) {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		return err
	}
	stopOps, err := serveOps(e, *metrics, reg, s.Ready)
	if err != nil {
		return err
	}
	defer stopOps()
	// The stage's own clients retry every Kafka error forever; a setting
	// that can never work (password, certificate) must end the start
	// instead, while an outage is waited out (kafkaconn.Wait).
	if err := kc.Wait(ctx, e.logger); err != nil {
		return err
	}
	if err := s.Run(ctx, *shutdown); err != nil {
		return err
	}
	return ctx.Err()
}

func runSinkStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "sink status")
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	since := fs.Duration("since", 24*time.Hour, "count ledger rows updated within this window")
	format := fs.String("format", "text", "text or json")
	alert := fs.String("alert-on", "", "statuses that make the command exit 3 when any row has them, e.g. failed,unknown,dead_lettered")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := requireDatabaseURL(*dbURL); err != nil {
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
