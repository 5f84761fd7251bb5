package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/demo/comparebench"
)

// benchCompareCmd is `outbox bench compare`: its flags make a
// comparebench.Config, and comparebench.Run runs the same workloads on the
// same Postgres and Apache Kafka through this relay and through Debezium's
// outbox connector with exactly-once on Kafka Connect, in alternating rounds.
func benchCompareCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "compare", Short: "run the same workloads through this relay and Debezium (exactly-once, Kafka Connect) on real Apache Kafka", Args: noArgs}
	cfg := comparebench.DefaultConfig()
	fs := c.Flags()
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "Postgres server to use (a database is created on it; its user needs REPLICATION and a password); default: a throwaway local cluster")
	markSecret(fs, "database-url")
	brokers := fs.String("brokers", "", "an existing Apache Kafka, host:port[,host:port]; default: one node started here from Maven Central jars")
	fs.IntVar(&cfg.BrokerPID, "broker-pid", 0, "with --brokers: the broker process whose CPU to count (0: not counted)")
	systems := fs.String("systems", strings.Join(cfg.Systems, ","), "systems to measure: "+strings.Join(comparebench.AllSystems, ", "))
	workloads := fs.String("workloads", strings.Join(cfg.Workloads, ","), "workloads to run: "+strings.Join(comparebench.AllWorkloads, ", "))
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds; the systems' order rotates every round")
	fs.IntVar(&cfg.BacklogEvents, "backlog-events", cfg.BacklogEvents, "backlog-single: single-event transactions committed before the start")
	fs.IntVar(&cfg.BatchTxns, "batch-txns", cfg.BatchTxns, "backlog-batch: transactions")
	fs.IntVar(&cfg.BatchRows, "batch-rows", cfg.BatchRows, "backlog-batch: events per transaction")
	fs.IntVar(&cfg.HugeEvents, "huge-events", cfg.HugeEvents, "huge: events in the one transaction")
	fs.DurationVar(&cfg.SteadyDuration, "steady-duration", cfg.SteadyDuration, "how long a steady workload offers load")
	fs.IntVar(&cfg.Payload, "payload", cfg.Payload, "payload bytes per event")
	fs.DurationVar(&cfg.MaxLatency, "max-latency", cfg.MaxLatency, "the relay's --max-latency")
	fs.DurationVar(&cfg.Timeout, "run-timeout", cfg.Timeout, "how long a run may take to deliver its events")
	fs.StringVar(&cfg.JSON, "json", "", "write every run and the medians to this JSON file")
	fs.StringVar(&cfg.PNG, "png", "", "write a plot of offered rate against p50/p99 latency to this PNG file")
	check := checkFlag(fs)
	c.RunE = func(c *cobra.Command, _ []string) error {
		cfg.Systems, cfg.Workloads = splitList(*systems), splitList(*workloads)
		if *brokers != "" {
			cfg.Brokers = splitList(*brokers)
		}
		if err := cfg.Validate(); err != nil {
			return invalidConfig(err, e.sources)
		}
		if *check {
			return printEffective(e.stdout, c, e.sources)
		}
		_, err := comparebench.Run(c.Context(), cfg, e.stdout)
		return err
	}
	return c
}
