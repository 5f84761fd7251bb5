// Command outbox is the one binary of the transactional outbox relay: it runs
// the pipeline's stages (relay, transform, sink), the demo, and the tools DBAs
// and on-call use (migrate, maintain, doctor, topics, lag, dlq, bench).
//
// main parses flags and environment into each stage's Config, runs it, and maps
// the result to an exit code; signals are handled here and nowhere else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/embedkafka"
	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/internal/topicspec"
	"github.com/outboxrelay/outbox/internal/tracing"
)

// command is one subcommand: run gets the arguments after its name.
type command struct {
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a subcommand may touch of the process: output streams and logger.
type env struct {
	stdout, stderr io.Writer
	logger         *slog.Logger
}

var commands = map[string]command{
	"relay":     {"stream the outbox from Postgres into Kafka, exactly once", runRelay},
	"transform": {"consume, transform and produce exactly once (orders -> payment/shipping commands)", runTransform},
	"sink":      {"call external HTTP APIs at most once per event, with retries and dead letters", runSink},
	"migrate":   {"run the embedded schema migrations: up | down | status | create NAME", runMigrate},
	"maintain":  {"create upcoming day partitions, drop expired ones, delete expired idempotency keys", runMaintain},
	"doctor":    {"check that Postgres is ready for the relay and say what to fix", runDoctor},
	"demo":      {"run the whole pipeline on a throwaway Postgres and an embedded Kafka", runDemo},
	"topics":    {"create or update topics from a file: apply -f topics.yaml [--dry-run]", runTopics},
	"lag":       {"consumer lag per group and partition, in records and seconds", runLag},
	"dlq":       {"read and replay dead-letter topics: list | show | replay", runDLQ},
	"bench":     {"measure the pipeline: bench relay | bench writer", runBench},
}

// errUsage marks an error whose message is a usage hint; main exits 2 for it.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	level := slog.LevelInfo
	if os.Getenv("OUTBOX_LOG_LEVEL") == "debug" {
		level = slog.LevelDebug
	}
	var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if os.Getenv("OUTBOX_LOG_FORMAT") == "json" {
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	e := &env{stdout: stdout, stderr: stderr, logger: slog.New(handler)}

	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "outbox: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// OTEL_EXPORTER_OTLP_ENDPOINT switches span export on; the trace context
	// is propagated either way.
	shutdownTracing, err := tracing.Setup(ctx, "outbox-"+args[0])
	if err != nil {
		fmt.Fprintf(stderr, "outbox %s: %v\n", args[0], err)
		return 1
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()
	err = cmd.run(ctx, e, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "outbox %s: %v\n", args[0], err)
		return 2
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		// SIGTERM/SIGINT: the stage shut down cleanly.
		return 0
	}
	var ex exitError
	if errors.As(err, &ex) {
		if ex.msg != "" {
			fmt.Fprintf(stderr, "outbox %s: %s\n", args[0], ex.msg)
		}
		return ex.code
	}
	fmt.Fprintf(stderr, "outbox %s: %v\n", args[0], err)
	return 1
}

// exitError asks main for a specific exit code (doctor's failed checks, lag's
// alert thresholds).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: outbox COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun `outbox COMMAND -h` for a command's flags. Every flag also reads an OUTBOX_* environment variable, named in its help.")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("outbox "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// envOr returns the environment variable name, or def when it is unset.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// startEmbeddedKafka starts an in-process kfake cluster for --embedded-kafka
// and points kc at it; the returned func stops it.
func startEmbeddedKafka(ctx context.Context, e *env, kc *kafkaconn.Config, who string) (func(), error) {
	c, err := embedkafka.Start(embedkafka.Config{})
	if err != nil {
		return nil, err
	}
	kc.Brokers = c.Brokers()
	e.logger.InfoContext(ctx, who+": embedded Kafka started", "brokers", strings.Join(kc.Brokers, ","))
	return c.Close, nil
}

// ensureTopics creates the missing ones of specs, as `outbox topics apply`
// would, for commands that set up their own topics (the demo, --embedded-kafka).
func ensureTopics(ctx context.Context, kopts []kgo.Opt, specs []topicspec.Spec) error {
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	plan, err := topicspec.MakePlan(ctx, cl, specs)
	if err != nil {
		return err
	}
	return topicspec.Apply(ctx, cl, plan)
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// databaseURLFlag registers --database-url with its OUTBOX_DATABASE_URL default.
func databaseURLFlag(fs *flag.FlagSet) *string {
	return fs.String("database-url", envOr("OUTBOX_DATABASE_URL", ""), "Postgres URL, e.g. postgres://user:pass@host:5432/db (env OUTBOX_DATABASE_URL)")
}

// schemaFlag registers --schema with its OUTBOX_SCHEMA default.
func schemaFlag(fs *flag.FlagSet) *string {
	return fs.String("schema", envOr("OUTBOX_SCHEMA", "outbox"), "Postgres schema holding the outbox tables (env OUTBOX_SCHEMA)")
}

// serveOps serves /metrics, /healthz and /readyz on addr (nothing when addr is
// empty) for a long-running subcommand; the returned func stops it, bounded.
func serveOps(e *env, addr string, reg *prometheus.Registry, ready func() error) (func(), error) {
	srv, err := opsserver.Start(opsserver.Config{Addr: addr, Registry: reg, Ready: ready, Logger: e.logger})
	if err != nil {
		return nil, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	}, nil
}

func requireDatabaseURL(url string) error {
	if strings.TrimSpace(url) == "" {
		return fmt.Errorf("%w: --database-url (or OUTBOX_DATABASE_URL) is required", errUsage)
	}
	return nil
}
