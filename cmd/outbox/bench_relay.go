package main

import (
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/demo/relaybench"
)

// benchRelayCmd is `outbox bench relay`: its flags make a relaybench.Config,
// and relaybench.Run measures backlog drain against a bare pglogrepl loop,
// commit-to-visible latency at a fixed offered rate, relay CPU per event and
// peak RSS, and one huge transaction, printing the figures as each phase ends.
func benchRelayCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "relay", Short: "measure the relay: backlog drain, latency under load, CPU and RSS, one huge transaction", Args: noArgs}
	cfg := relaybench.DefaultConfig()
	fs := c.Flags()
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "Postgres server to use (a database is created on it); default: a throwaway local cluster")
	markSecret(fs, "database-url")
	cfg.Kafka.Register(fs)
	fs.IntVar(&cfg.Events, "events", cfg.Events, "backlog size: single-event transactions to drain (0 skips the drain and baseline)")
	fs.IntVar(&cfg.Payload, "payload", cfg.Payload, "payload bytes per event")
	fs.IntVar(&cfg.Rate, "rate", cfg.Rate, "steady phase: offered events per second (0 skips)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "steady phase: how long to offer load")
	fs.IntVar(&cfg.HugeEvents, "huge-events", cfg.HugeEvents, "events in one Postgres transaction for the RSS check (0 skips)")
	fs.IntVar(&cfg.MaxBatchEvents, "max-batch-events", cfg.MaxBatchEvents, "relay --max-batch-events (0: the relay's default)")
	fs.DurationVar(&cfg.MaxLatency, "max-latency", cfg.MaxLatency, "relay --max-latency (0: never wait)")
	fs.DurationVar(&cfg.Linger, "linger", cfg.Linger, "relay --linger")
	fs.StringVar(&cfg.RelayCPUProfile, "relay-cpuprofile", "", "write the relay's CPU profile of the drain phase to this file")
	check := checkFlag(fs)
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := cfg.Validate(); err != nil {
			return invalidConfig(err, e.sources)
		}
		if *check {
			return printEffective(e.stdout, c, e.sources)
		}
		cfg.RelayEnv = stageEnv(c, e.sources)
		_, err := relaybench.Run(c.Context(), cfg, e.stdout)
		return err
	}
	return c
}
