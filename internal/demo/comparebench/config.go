// Package comparebench is `outbox bench compare` (issue 11): the same
// workloads, on the same Postgres and the same real Apache Kafka, through
// this relay and through Debezium's Postgres connector with the outbox
// EventRouter on Kafka Connect with exactly-once source support
// (internal/demo/debezium), in alternating rounds. Every run counts what a
// read_committed consumer received, by event id, before its figures count:
// events/s, CPU per event of the system and of the broker (each a process
// of its own, read from /proc), peak RSS, and commit-to-visible latency at
// fixed offered rates. It prints a table with ratios against the relay and
// writes the runs as JSON and a PNG plot of offered rate against latency.
package comparebench

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outboxrelay/outbox/relay"
)

// The systems a run can measure.
const (
	SystemRelay         = "relay"          // this relay, as a child `outbox relay` process
	SystemDebezium      = "debezium"       // Debezium 3.6.1.Final on Connect, its default batching
	SystemDebeziumTuned = "debezium-tuned" // the same with debezium.TunedSettings
)

// The workloads, each on a fresh slot and topic.
const (
	// WorkloadBacklogSingle: Config.BacklogEvents single-event
	// transactions committed before the system starts, then drained.
	WorkloadBacklogSingle = "backlog-single"
	// WorkloadBacklogBatch: Config.BatchTxns transactions of
	// Config.BatchRows events each, committed before the start.
	WorkloadBacklogBatch = "backlog-batch"
	// WorkloadSteady1k: 1,000 single-event transactions per second for
	// Config.SteadyDuration.
	WorkloadSteady1k = "steady-1k"
	// WorkloadSteady5k: 5,000 single-event transactions per second offered.
	WorkloadSteady5k = "steady-5k"
	// WorkloadSteady10k: 10,000 events per second as 1,000 transactions of
	// 10 events each.
	WorkloadSteady10k = "steady-10k"
	// WorkloadHuge: one transaction of Config.HugeEvents events, committed
	// before the start.
	WorkloadHuge = "huge"
)

// AllSystems and AllWorkloads are the defaults, in the order runs take them.
var (
	AllSystems   = []string{SystemRelay, SystemDebezium, SystemDebeziumTuned}
	AllWorkloads = []string{WorkloadBacklogSingle, WorkloadBacklogBatch, WorkloadSteady1k, WorkloadSteady5k, WorkloadSteady10k, WorkloadHuge}
)

// Config is one `outbox bench compare`. Each field names the flag that sets
// it; DefaultConfig holds the full-scale values the command starts from.
type Config struct {
	// DatabaseURL is the Postgres server (--database-url); a database
	// bench_compare_<unix time> is made on it. Its user needs REPLICATION
	// and a password Debezium's JDBC driver can send. Empty: a throwaway
	// local cluster.
	DatabaseURL string
	// Brokers is an existing Apache Kafka (--brokers). Empty: a one-node
	// Apache Kafka started from Maven Central jars (scripts/kafka.sh) and
	// stopped at the end.
	Brokers []string
	// BrokerPID is, with Brokers, the broker process whose CPU each run
	// counts (--broker-pid). Zero: broker CPU is not reported. Without
	// Brokers it is the started broker's.
	BrokerPID int
	// Systems to measure (--systems). Default AllSystems.
	Systems []string
	// Workloads to run (--workloads). Default AllWorkloads.
	Workloads []string
	// Rounds is how many times each workload runs on each system, the
	// systems' order rotating every round (--rounds). Default 3.
	Rounds int
	// BacklogEvents sizes backlog-single (--backlog-events). Default 200,000.
	BacklogEvents int
	// BatchTxns and BatchRows size backlog-batch (--batch-txns,
	// --batch-rows). Default 200 × 1,000.
	BatchTxns, BatchRows int
	// HugeEvents sizes huge (--huge-events). Default 1,000,000.
	HugeEvents int
	// SteadyDuration is how long a steady workload offers load
	// (--steady-duration). Default 20s.
	SteadyDuration time.Duration
	// Payload is each event's payload size in bytes (--payload). Default 500.
	Payload int
	// MaxLatency is the relay's --max-latency (--max-latency). Default
	// relay.DefaultMaxLatency.
	MaxLatency time.Duration
	// JSON and PNG are where the runs and the latency plot are written
	// (--json, --png). Empty: not written.
	JSON, PNG string
	// Binary is the outbox executable the relay runs as. Empty: this
	// process's own.
	Binary string
	// Timeout bounds each run's wait for its events (--run-timeout).
	// Default 10m.
	Timeout time.Duration
}

// DefaultConfig returns the full-scale settings.
func DefaultConfig() Config {
	return Config{
		Systems:        slices.Clone(AllSystems),
		Workloads:      slices.Clone(AllWorkloads),
		Rounds:         3,
		BacklogEvents:  200_000,
		BatchTxns:      200,
		BatchRows:      1000,
		HugeEvents:     1_000_000,
		SteadyDuration: 20 * time.Second,
		Payload:        500,
		MaxLatency:     relay.DefaultMaxLatency,
		Timeout:        10 * time.Minute,
	}
}

// Validate reports every setting Run would refuse, each naming its flag.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(c.Systems) == 0 {
		bad("--systems: name at least one of %s", strings.Join(AllSystems, ", "))
	}
	for _, s := range c.Systems {
		if !slices.Contains(AllSystems, s) {
			bad("--systems: unknown system %q: want %s", s, strings.Join(AllSystems, ", "))
		}
	}
	if len(c.Workloads) == 0 {
		bad("--workloads: name at least one of %s", strings.Join(AllWorkloads, ", "))
	}
	for _, w := range c.Workloads {
		if !slices.Contains(AllWorkloads, w) {
			bad("--workloads: unknown workload %q: want %s", w, strings.Join(AllWorkloads, ", "))
		}
	}
	if c.Rounds < 1 {
		bad("--rounds %d: at least 1", c.Rounds)
	}
	for flag, n := range map[string]int{"--backlog-events": c.BacklogEvents, "--batch-txns": c.BatchTxns, "--batch-rows": c.BatchRows, "--huge-events": c.HugeEvents, "--payload": c.Payload} {
		if n < 1 {
			bad("%s %d: at least 1", flag, n)
		}
	}
	if c.SteadyDuration < time.Second {
		bad("--steady-duration %s: at least 1s", c.SteadyDuration)
	}
	if c.MaxLatency < 0 {
		bad("--max-latency %s: not below 0", c.MaxLatency)
	}
	if c.Timeout <= 0 {
		bad("--run-timeout %s: above 0", c.Timeout)
	}
	if c.BrokerPID < 0 {
		bad("--broker-pid %d: not below 0", c.BrokerPID)
	}
	return errors.Join(errs...)
}

// workload is what a workload name means.
type workload struct {
	name string
	// backlog: committed before the system starts, txns × rows.
	txns, rows int
	// steady: transactions per second of rows events each.
	rate int
}

func (c Config) workload(name string) workload {
	switch name {
	case WorkloadBacklogSingle:
		return workload{name: name, txns: c.BacklogEvents, rows: 1}
	case WorkloadBacklogBatch:
		return workload{name: name, txns: c.BatchTxns, rows: c.BatchRows}
	case WorkloadHuge:
		return workload{name: name, txns: 1, rows: c.HugeEvents}
	case WorkloadSteady1k:
		return workload{name: name, rate: 1000, rows: 1}
	case WorkloadSteady5k:
		return workload{name: name, rate: 5000, rows: 1}
	default: // WorkloadSteady10k
		return workload{name: name, rate: 1000, rows: 10}
	}
}

func (w workload) steady() bool { return w.rate > 0 }

// events is how many events the workload commits (a steady one: offers).
func (w workload) events(d time.Duration) int {
	if w.steady() {
		return int(d.Seconds() * float64(w.rate*w.rows))
	}
	return w.txns * w.rows
}
