package main

import (
	"context"
	"fmt"

	"github.com/outboxrelay/outbox/internal/demo"
)

// execMainEnv makes a test binary run main's dispatcher (see main_test.go),
// so the demo's stage processes work under `go test` as with the real binary.
const execMainEnv = "OUTBOX_EXEC_MAIN"

// runDemo runs the whole pipeline (demo.Run): a throwaway Postgres (or
// --database-url), an in-process kfake or, with --kafka apache, a real Apache
// Kafka broker started for the demo (or existing --brokers), an order service
// with a load generator, and the relay, the orders transform and two sinks as
// child processes of this binary; then it prints the audit with a pass/fail
// line. A failed audit exits 1; a bad flag value exits 2 before anything starts.
func runDemo(ctx context.Context, e *env, args []string) error {
	cfg := demo.DefaultConfig()
	fs := newFlagSet(e, "demo")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "use this Postgres instead of a throwaway cluster (needs wal_level=logical)")
	registerKafkaStd(fs, &cfg.Kafka)
	fs.StringVar(&cfg.KafkaKind, "kafka", "", "the Kafka to start when --brokers is not given: kfake (the default: in-process, instant) or apache (a real one-node Apache Kafka broker from scripts/kafka.sh, needs Java 17+; stopped at the end)")
	fs.IntVar(&cfg.Orders, "orders", cfg.Orders, "orders to place, at least 1")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "orders per second, above 0")
	fs.Float64Var(&cfg.Duplicates, "duplicates", cfg.Duplicates, "share of orders submitted twice with the same Idempotency-Key, 0 to 1")
	fs.BoolVar(&cfg.Chaos, "chaos", false, "SIGKILL and restart stage processes at random while orders are placed")
	fs.DurationVar(&cfg.ChaosInterval, "chaos-interval", cfg.ChaosInterval, "mean time between chaos kills (at least 2s: a killed stage needs time to rejoin)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "fail when the pipeline has not settled this long after the first order")
	fs.StringVar(&cfg.LogDir, "log-dir", "", "where stage processes write their logs, kept; defaults to a temp dir, removed after a passing run")
	fs.BoolVar(&cfg.KeepLogs, "keep-logs", false, "keep the temp log dir after a passing run too (a failed run always keeps it)")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "no live progress view")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve /metrics /healthz /readyz for the demo process on this address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg.Logger, cfg.StageEnv = e.logger, []string{execMainEnv + "=1"}

	report, err := demo.Run(ctx, cfg, e.stdout)
	if report != nil {
		fmt.Fprint(e.stdout, report)
	}
	if err != nil {
		return err
	}
	if !report.Pass() {
		return exitError{code: 1, msg: "audit failed"}
	}
	return nil
}
