package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/console"
	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/internal/pgconnect"
)

// consoleCmd is `outbox console`: the on-call web console (pipeline, an
// order's journey, dead letters, ledger) on --listen, read-only unless
// --allow-actions and --token.
func consoleCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "console", Short: "the on-call web console: pipeline, an order's journey, dead letters, ledger", Args: noArgs}
	fs := c.Flags()
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	var kc kafkaconn.Config
	kc.Register(fs)
	listen := fs.String("listen", "127.0.0.1:8080", "serve the console on this address; bind beyond loopback only behind TLS or a trusted network")
	allow := fs.Bool("allow-actions", false, "allow replaying and quarantining dead letters from the console (needs --token); without it the console never writes")
	token := fs.String("token", "", "token an action must carry: Authorization: Bearer TOKEN, or basic auth with it as the password")
	markSecret(fs, "token")
	dlqTopics := fs.StringSlice("dlq-topic", nil, "dead-letter topics to show; repeat or comma separate; default every topic named *.dlt")
	groups := fs.StringSlice("group", nil, "consumer groups to show; repeat or comma separate; default every group")
	journeyTopics := fs.StringSlice("journey-topic", nil, "more topics a journey searches (the transform's command topics, a relay's custom routes)")
	interval := fs.Duration("interval", 5*time.Second, "time between pipeline samples")
	window := fs.Int("window", 3, "lag samples per partition that the status judges, as outbox lag --window")
	maxReplays := fs.Int("max-replays", 3, "a dead letter replayed this many times is quarantined instead, as outbox dlq replay --max-replays")
	stageMetrics := fs.StringSlice("stage-metrics", nil, "/metrics URL of a stage process (its --metrics-addr; host:port means http://host:port/metrics): breaker states, standby relays, rates; repeat or comma separate")
	stageTimeout := fs.Duration("stage-timeout", 2*time.Second, "time limit of one scrape of a --stage-metrics URL")
	metrics := metricsAddrFlag(fs)
	check := checkFlag(fs)
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if err := requireDatabaseURL(*dbURL); err != nil {
			return err
		}
		if *allow && *token == "" {
			return fmt.Errorf("%w: --allow-actions needs --token (or OUTBOX_CONSOLE_TOKEN): actions are never open to anyone who reaches the port", errUsage)
		}
		if !*allow && *token != "" {
			return fmt.Errorf("%w: --token without --allow-actions: the console is read-only, so the token would do nothing", errUsage)
		}
		if *interval <= 0 || *window < 1 {
			return fmt.Errorf("%w: --interval must be positive and --window at least 1", errUsage)
		}
		if *stageTimeout <= 0 {
			return fmt.Errorf("%w: --stage-timeout must be positive", errUsage)
		}
		kopts, err := kc.Opts()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if *check {
			return printEffective(e.stdout, c, e.sources)
		}
		if err := checkPostgres(ctx, *dbURL); err != nil {
			return err
		}
		if err := kc.Wait(ctx, e.logger); err != nil {
			return err
		}
		pool, err := pgxpool.New(ctx, *dbURL)
		if err != nil {
			return fmt.Errorf("console: connect: %w", err)
		}
		defer pool.Close()
		stopped := e.starting(ctx, c, "database", pgconnect.Redact(*dbURL), "schema", *schema, "listen", *listen, "actions", *allow)
		l, err := console.Listen(ctx, console.Config{
			Pool: pool, Schema: *schema, KafkaOpts: kopts, Groups: *groups, DLQTopics: *dlqTopics, JourneyTopics: *journeyTopics,
			StageMetrics: *stageMetrics, StageTimeout: *stageTimeout,
			Interval: *interval, Window: *window, AllowActions: *allow, Token: *token, MaxReplays: *maxReplays, Logger: e.logger,
		}, *listen)
		if errors.Is(err, console.ErrInvalidConfig) {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if err != nil {
			return stopped(ctx, err)
		}
		stopOps, err := serveOps(e, *metrics, opsserver.NewRegistry(), l.Server().Ready)
		if err != nil {
			_ = stopConsole(l)
			return err
		}
		defer stopOps()
		fmt.Fprintf(e.stderr, "outbox console: serving on %s (%s)\n", l.URL(), map[bool]string{true: "actions allowed with the token", false: "read-only"}[*allow])
		select {
		case <-l.Done():
			err = stopConsole(l) // the server ended on its own: its error, and the sampler stopped
		case <-ctx.Done():
			err = stopConsole(l)
			if err == nil {
				err = ctx.Err()
			}
		}
		return stopped(ctx, err)
	}
	return c
}

// stopConsole stops a console within 10s.
func stopConsole(l *console.Listening) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return l.Stop(ctx)
}

// consoleFlag registers --console on a long-running stage command.
func consoleFlag(fs *pflag.FlagSet) *string {
	return fs.String("console", "", "also serve the read-only on-call console on this address (as outbox console --listen; it reads the database: --database-url, for transform --console-database-url)")
}

// startStageConsole serves a read-only console beside a stage (--console
// ADDR) until the returned stop; without addr it does nothing.
func startStageConsole(ctx context.Context, e *env, addr, dbURL, schema string, kopts []kgo.Opt) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	if dbURL == "" {
		return nil, fmt.Errorf("%w: --console needs the database (--database-url; for transform --console-database-url): the console reads the outbox and the sink ledger", errUsage)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("console: connect: %w", err)
	}
	l, err := console.Listen(ctx, console.Config{Pool: pool, Schema: schema, KafkaOpts: kopts, Logger: e.logger}, addr)
	if err != nil {
		pool.Close()
		return nil, err
	}
	e.logger.InfoContext(ctx, "console: serving (read-only)", "url", l.URL())
	return func() {
		_ = stopConsole(l)
		pool.Close()
	}, nil
}
