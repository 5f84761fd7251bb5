package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/outboxrelay/outbox/internal/demo"
)

// execMainEnv makes a test binary run main's dispatcher (see main_test.go),
// so the demo's stage processes work under `go test` as with the real binary.
const execMainEnv = "OUTBOX_EXEC_MAIN"

// demoCmd is `outbox demo`: its flags make a demo.Config, and demo.Run runs
// the whole pipeline once (a throwaway Postgres or --database-url, kfake,
// Apache Kafka or --brokers, an order service with a load generator, and the
// stages as child processes of this binary), then the audit is printed with
// a pass/fail line. A failed audit exits 1; a bad value exits 2 before
// anything starts.
func demoCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "demo", Short: "run the whole pipeline on a throwaway Postgres and an embedded Kafka, then audit it", Args: noArgs}
	cfg := demo.DefaultConfig()
	fs := c.Flags()
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "use this Postgres instead of a throwaway cluster (needs wal_level=logical)")
	markSecret(fs, "database-url")
	cfg.Kafka.Register(fs)
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
	fs.StringVar(&cfg.ConsoleAddr, "console", cfg.ConsoleAddr, "serve the read-only on-call console on this address while the demo runs (port 0: a free one; empty: none); its URL is printed")
	fs.DurationVar(&cfg.LingerConsole, "linger-console", 0, "keep the console (and Postgres, Kafka and the stages) up this long after the report, to look around; Ctrl-C ends it")
	fs.StringVar(&cfg.ConsoleToken, "console-token", "", "let the demo's console replay and quarantine dead letters for requests with this token (Authorization: Bearer TOKEN)")
	markSecret(fs, "console-token")
	fs.IntVar(&cfg.DeclineEvery, "decline-every", 0, "the payment API declines the first charge of about one order in N (422): dead letters to replay from the console")
	check := checkFlag(fs)
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := cfg.Validate(); err != nil {
			return invalidConfig(err, e.sources)
		}
		if *check {
			return printEffective(e.stdout, c, e.sources)
		}
		cfg.Logger, cfg.StageEnv = e.logger, stageEnv(c, e.sources)
		printed := false
		cfg.OnReport = func(r *demo.Report) { fmt.Fprint(e.stdout, r); printed = true }
		report, err := demo.Run(c.Context(), cfg, e.stdout)
		if report != nil && !printed {
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
	return c
}

var flagInError = regexp.MustCompile(`--[a-z][a-z0-9-]*`)

// invalidConfig is a Config's Validate error as a usage error. Validate names
// flags, but a value may have come from a variable the user no longer has in
// mind (an export in the shell), so each line also names the variables that
// set the flags it mentions.
func invalidConfig(err error, src flagSources) error {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		var from []string
		for _, f := range flagInError.FindAllString(l, -1) {
			if s, ok := strings.CutPrefix(src[strings.TrimPrefix(f, "--")], "env "); ok {
				from = append(from, s)
			}
		}
		if len(from) > 0 {
			lines[i] = l + " (from " + strings.Join(from, ", ") + ")"
		}
	}
	return fmt.Errorf("%w: %s", errUsage, strings.Join(lines, "\n"))
}

// stageEnv is the environment the stages that demo and bench start as child
// processes get on top of this process's own. They inherit it, so every
// OUTBOX_* variable of the shell would reach them too: OUTBOX_SCHEMA would
// point the relay at a schema the demo never migrated, OUTBOX_METRICS_ADDR
// would make four processes bind one port, OUTBOX_RELAY_LINGER would skew the
// bench. So each is blanked (an empty variable counts as unset), except the
// log settings; and the Kafka TLS and SASL settings of c, from a flag or a
// variable, are passed as their variables, so a secured broker given to the
// demo reaches its stages without a password on their command lines. The
// stages' other settings are the flags the demo and bench give them.
func stageEnv(c *cobra.Command, src flagSources) []string {
	vars := []string{}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "OUTBOX_") && name != "OUTBOX_LOG_LEVEL" && name != "OUTBOX_LOG_FORMAT" {
			vars = append(vars, name+"=")
		}
	}
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if sharedFlags[f.Name] && strings.HasPrefix(f.Name, "kafka-") && src[f.Name] != "default" {
			vars = append(vars, envNames(c, f.Name)[0]+"="+f.Value.String())
		}
	})
	return append(vars, execMainEnv+"=1")
}
