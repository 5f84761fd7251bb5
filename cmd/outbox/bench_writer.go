package main

import (
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/demo/writerbench"
)

// benchWriterCmd is `outbox bench writer`: its flags make a
// writerbench.Config, and writerbench.Run measures an order transaction
// (order row and three line items) without and with the outbox (key claim,
// event, stored response) at each writer count and mode, printing a row per
// case: tx/s, p50 and p99 latency, round trips and WAL per transaction, and
// the ratio to the transaction without the outbox.
func benchWriterCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "writer", Short: "measure what the outbox writer adds to an order transaction: tx/s, p50/p99 latency, ratio", Args: noArgs}
	cfg := writerbench.DefaultConfig()
	fs := c.Flags()
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "Postgres server to use (a database is created on it and dropped); default: a throwaway local cluster with fsync on")
	markSecret(fs, "database-url")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long each case is measured in all, after its warm-up")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "split each case's --duration into this many rounds, taken in turn with the other cases")
	fs.IntSliceVar(&cfg.Writers, "writers", cfg.Writers, "concurrent writers to measure each case at, comma separated")
	fs.StringSliceVar(&cfg.Modes, "modes", cfg.Modes, "how statements travel: statements (one round trip each) and/or batch (pipelined), comma separated")
	fs.BoolVar(&cfg.Statements, "statements", false, "also print each case's statements from pg_stat_statements: calls, server time per transaction, WAL per call")
	check := checkFlag(fs)
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := cfg.Validate(); err != nil {
			return invalidConfig(err, e.sources)
		}
		if *check {
			return printEffective(e.stdout, c, e.sources)
		}
		_, err := writerbench.Run(c.Context(), cfg, e.stdout)
		return err
	}
	return c
}
