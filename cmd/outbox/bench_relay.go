package main

import (
	"context"
	"fmt"

	"github.com/outboxrelay/outbox/internal/relaybench"
)

func init() { benches["relay"] = benchRelay }

// benchRelay measures the relay (relaybench.Run): backlog drain against a bare
// pglogrepl loop, commit-to-visible latency at a fixed offered rate, relay CPU
// per event and peak RSS, and one huge transaction. The figures are printed as
// each phase ends.
func benchRelay(ctx context.Context, e *env, args []string) error {
	cfg := relaybench.DefaultConfig()
	fs := newFlagSet(e, "bench relay")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "Postgres server to use (a database is created on it); default: a throwaway local cluster")
	registerKafkaStd(fs, &cfg.Kafka)
	fs.IntVar(&cfg.Events, "events", cfg.Events, "backlog size: single-event transactions to drain (0 skips the drain and baseline)")
	fs.IntVar(&cfg.Payload, "payload", cfg.Payload, "payload bytes per event")
	fs.IntVar(&cfg.Rate, "rate", cfg.Rate, "steady phase: offered events per second (0 skips)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "steady phase: how long to offer load")
	fs.IntVar(&cfg.HugeEvents, "huge-events", cfg.HugeEvents, "events in one Postgres transaction for the RSS check (0 skips)")
	fs.IntVar(&cfg.MaxBatchEvents, "max-batch-events", cfg.MaxBatchEvents, "relay --max-batch-events (0: the relay's default)")
	fs.DurationVar(&cfg.Linger, "linger", cfg.Linger, "relay --linger")
	fs.StringVar(&cfg.RelayCPUProfile, "relay-cpuprofile", "", "write the relay's CPU profile of the drain phase to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg.RelayEnv = []string{execMainEnv + "=1"}

	_, err := relaybench.Run(ctx, cfg, e.stdout)
	return err
}
