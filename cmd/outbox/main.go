// Command outbox is the one binary of the transactional outbox relay: it runs
// the pipeline's stages (relay, transform, sink), the demo, and the tools DBAs
// and on-call use (migrate, maintain, doctor, topics, lag, dlq, bench).
//
// main builds the command tree (cobra), binds every flag to its OUTBOX_*
// variable, runs the command and maps the result to an exit code; signals are
// handled here and nowhere else. docs/cli.md is generated from the same tree
// (`outbox docs-cli`), and a test fails when it is stale.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/buildinfo"
	"github.com/outboxrelay/outbox/internal/demo/embedkafka"
	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/ops/topicspec"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/internal/pgconnect"
	"github.com/outboxrelay/outbox/internal/tracing"
)

// env is what a subcommand may touch of the process: output streams, the
// logger (set once the flags are parsed), and where each flag's value came from.
type env struct {
	stdout, stderr io.Writer
	logger         *slog.Logger
	sources        flagSources
}

// errUsage marks an error whose message is a usage hint; main exits 2 for it.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// newRoot builds the command tree; run builds a fresh one per call, because
// flags hold state.
func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "outbox",
		Short: "transactional outbox relay: Postgres to Kafka exactly once, and external calls at most once",
		Long: `outbox streams events that services write into a Postgres outbox table to Kafka
exactly once (relay), turns them into commands exactly once (transform), and
calls external HTTP APIs at most once per event (sink).

Every flag may come before or after the action and also reads an OUTBOX_*
variable, named in its help; a flag given on the command line wins.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Without a command: the list, on stderr, and exit 2.
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("%w: unknown command %q; run `outbox -h` for the list", errUsage, args[0])
			}
			c.SetOut(e.stderr)
			_ = c.Usage()
			return errSilentUsage
		},
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().String("log-format", "text", "log format: text or json")
	root.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		src, err := bindEnv(c)
		e.sources = src
		if err != nil {
			return err
		}
		return e.setLogger(c)
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w: %v; run `%s -h` for its flags", errUsage, err, c.CommandPath())
	})
	root.AddCommand(
		relayCmd(e), transformCmd(e), sinkCmd(e),
		migrateCmd(e), maintainCmd(e), doctorCmd(e),
		demoCmd(e), topicsCmd(e), lagCmd(e), dlqCmd(e), republishCmd(e), benchCmd(e), ingestCmd(e), schemaCmd(e),
		versionCmd(e), docsCmd(e),
	)
	root.AddCommand(consoleCmd(e))
	root.InitDefaultCompletionCmd()
	annotateUsage(root)
	return root
}

// errSilentUsage exits 2 with nothing more printed.
var errSilentUsage = fmt.Errorf("%w: see above", errUsage)

func (e *env) setLogger(c *cobra.Command) error {
	levelName, _ := c.Flags().GetString("log-level")
	format, _ := c.Flags().GetString("log-format")
	var level slog.Level
	if err := level.UnmarshalText([]byte(levelName)); err != nil {
		return fmt.Errorf("%w: --log-level %q: use debug, info, warn or error", errUsage, levelName)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		e.logger = slog.New(slog.NewTextHandler(e.stderr, opts))
	case "json":
		e.logger = slog.New(slog.NewJSONHandler(e.stderr, opts))
	default:
		return fmt.Errorf("%w: --log-format %q: use text or json", errUsage, format)
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, logger: slog.New(slog.NewTextHandler(stderr, nil))}
	root := newRoot(e)
	root.SetArgs(args)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	name := "outbox"
	if c, _, err := root.Find(args); err == nil && c != root {
		name = "outbox-" + topCommand(c)
	}
	// OTEL_EXPORTER_OTLP_ENDPOINT switches span export on; the trace context
	// is propagated either way.
	shutdownTracing, err := tracing.Setup(ctx, name)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()

	c, err := root.ExecuteContextC(ctx)
	return exitCode(ctx, c, err, stderr)
}

// exitCode maps a command's result to the process's exit code: 0, 1 for a
// failure, 2 for a usage error (bad flag, bad value, missing setting), or
// the code an exitError asks for.
func exitCode(ctx context.Context, c *cobra.Command, err error, stderr io.Writer) int {
	path := "outbox"
	if c != nil {
		path = c.CommandPath()
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errSilentUsage):
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "%s: %s\n", path, strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	case isCobraUsage(err):
		fmt.Fprintf(stderr, "%s: %v; run `%s -h` for usage\n", path, err, path)
		return 2
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		// SIGTERM/SIGINT: the stage shut down cleanly.
		return 0
	}
	var ex exitError
	if errors.As(err, &ex) {
		if ex.msg != "" {
			fmt.Fprintf(stderr, "%s: %s\n", path, ex.msg)
		}
		return ex.code
	}
	fmt.Fprintf(stderr, "%s: %v\n", path, err)
	return 1
}

// isCobraUsage reports the argument errors cobra makes itself.
func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.Contains(s, "flag needs an argument") ||
		strings.HasPrefix(s, "invalid argument") || strings.HasPrefix(s, "accepts ") ||
		strings.HasPrefix(s, "requires at least")
}

// exitError asks main for a specific exit code (doctor's failed checks, lag's
// alert thresholds).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }

// groupCmd is a command that only holds actions: without one it prints its
// usage and exits 2; with an unknown one it says so.
func groupCmd(e *env, use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Args: cobra.ArbitraryArgs}
	c.RunE = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("%w: unknown action %q; run `%s -h` for the list", errUsage, args[0], c.CommandPath())
		}
		c.SetOut(e.stderr)
		_ = c.Usage()
		return errSilentUsage
	}
	c.AddCommand(subs...)
	return c
}

// exactArgs wants n positional arguments, named in the error.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%w: want %s, got %d argument(s); run `%s -h` for usage", errUsage, names, len(args), c.CommandPath())
		}
		return nil
	}
}

// noArgs is cobra.NoArgs as a usage error.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q; run `%s -h` for usage", errUsage, args, c.CommandPath())
	}
	return nil
}

// startEmbeddedKafka starts an in-process kfake cluster for --embedded-kafka
// and points kc at it; the returned func stops it. Under --check (checkOnly)
// nothing starts: kc gets a placeholder broker so the settings validate.
func startEmbeddedKafka(ctx context.Context, e *env, kc *kafkaconn.Config, who string, checkOnly bool) (func(), error) {
	if checkOnly {
		kc.Brokers = []string{"embedded"}
		return func() {}, nil
	}
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

// databaseURLFlag registers --database-url (OUTBOX_DATABASE_URL), a secret.
func databaseURLFlag(fs *pflag.FlagSet) *string {
	p := fs.String("database-url", "", "Postgres URL, e.g. postgres://user:pass@host:5432/db")
	markSecret(fs, "database-url")
	return p
}

// schemaFlag registers --schema (OUTBOX_SCHEMA).
func schemaFlag(fs *pflag.FlagSet) *string {
	return fs.String("schema", "outbox", "Postgres schema holding the outbox tables")
}

// metricsAddrFlag registers --metrics-addr (OUTBOX_METRICS_ADDR).
func metricsAddrFlag(fs *pflag.FlagSet) *string {
	return fs.String("metrics-addr", "", "serve /metrics /healthz /readyz on this address, e.g. :9090")
}

// checkFlag registers --check on a stage.
func checkFlag(fs *pflag.FlagSet) *bool {
	return fs.Bool("check", false, "validate the flags and environment, print the effective settings with secrets redacted, and exit 0 (valid) or 2 without starting")
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

// starting logs a stage's start with the build it runs, and returns the
// func that logs its stop: on-call reads both lines first.
func (e *env) starting(ctx context.Context, c *cobra.Command, attrs ...any) func(context.Context, error) error {
	in := buildinfo.Get()
	attrs = append([]any{"version", in.Version, "revision", in.Revision, "go", in.GoVersion}, attrs...)
	e.logger.InfoContext(ctx, c.CommandPath()+" starting", attrs...)
	began := time.Now()
	return func(ctx context.Context, err error) error {
		ran := time.Since(began).Round(time.Millisecond)
		switch {
		case err == nil || (errors.Is(err, context.Canceled) && ctx.Err() != nil):
			e.logger.Info(c.CommandPath()+" stopped", "reason", "signal", "ran", ran)
		default:
			e.logger.Error(c.CommandPath()+" stopped", "reason", "error", "error", err, "ran", ran)
		}
		return err
	}
}

// checkPostgres connects once before a command starts, so a malformed URL,
// a refused connection, a wrong password or a missing database ends the
// start in seconds with one line saying what to fix, instead of the stage
// retrying forever as if it were an outage. A malformed URL is a usage
// error (exit 2). An outage after a healthy start is the stage's to ride out.
func checkPostgres(ctx context.Context, dbURL string, opts ...pgconnect.Option) error {
	err := pgconnect.Check(ctx, dbURL, 0, opts...)
	if errors.Is(err, pgconnect.ErrBadURL) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return err
}

// actsOn prints, before a command changes a database, which one: a wrong
// OUTBOX_DATABASE_URL in the shell is then visible before it matters.
func actsOn(e *env, what, dbURL, schema string) {
	fmt.Fprintf(e.stderr, "%s: database %s, schema %s\n", what, pgconnect.Redact(dbURL), schema)
}
