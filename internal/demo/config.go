package demo

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
)

// Values of Config.KafkaKind.
const (
	KafkaKfake  = "kfake"  // franz-go's kfake in the demo process: starts at once
	KafkaApache = "apache" // a real one-node Apache Kafka from scripts/kafka.sh
)

// MinChaosInterval is the shortest Config.ChaosInterval: a killed stage needs
// about that long to rejoin before the next kill.
const MinChaosInterval = 2 * time.Second

// Config is what one demo run does. Each field's doc names the `outbox demo`
// flag that sets it and what its zero value means. Orders, Rate and Timeout
// have no usable zero (Validate rejects it); DefaultConfig holds the values the
// command starts from.
type Config struct {
	// DatabaseURL is a Postgres server with wal_level=logical whose database the
	// demo uses as it is (--database-url). Empty: a throwaway cluster from the
	// local Postgres binaries (or a container), with a new database, stopped at
	// the end.
	DatabaseURL string
	// Kafka reaches existing brokers (--brokers and the --kafka-tls and
	// --kafka-sasl flags). With no Brokers the demo starts the Kafka that
	// KafkaKind names.
	Kafka kafkaconn.Config
	// KafkaKind is the Kafka to start when Kafka.Brokers is empty (--kafka):
	// KafkaKfake or KafkaApache. Empty: KafkaKfake. Set together with
	// Kafka.Brokers it is an error, as the two name different brokers.
	KafkaKind string
	// Orders is how many distinct orders the load generator places (--orders).
	// At least 1; zero is rejected. DefaultConfig: 300.
	Orders int
	// Rate is orders placed per second (--rate). Positive and finite; zero is
	// rejected. DefaultConfig: 60.
	Rate float64
	// Duplicates is the share of orders submitted a second time with the same
	// Idempotency-Key (--duplicates), from 0 to 1. Zero: each order is sent
	// once. DefaultConfig: 0.2.
	Duplicates float64
	// Chaos SIGKILLs and restarts stage processes at random while orders are
	// placed (--chaos). Zero (false): no kills.
	Chaos bool
	// ChaosInterval is the mean time between chaos kills (--chaos-interval),
	// at least MinChaosInterval. Used only with Chaos, so zero is fine without
	// it. DefaultConfig: 5s.
	ChaosInterval time.Duration
	// Timeout bounds the wait for the pipeline to settle, counted from the
	// first order (--timeout); a run that has not settled by then fails.
	// Positive; zero is rejected. DefaultConfig: 5m.
	Timeout time.Duration
	// LogDir is where the stage processes write their logs (--log-dir); it is
	// created if missing and always kept. Empty: a new temp dir
	// (outbox-demo-logs-* under $TMPDIR), removed after a passing run unless
	// KeepLogs, kept (and named in the report) after a failed one.
	LogDir string
	// KeepLogs keeps the temp log dir after a passing run too (--keep-logs).
	// Zero (false): removed when the run passes.
	KeepLogs bool
	// Quiet drops the progress line a second and the chaos lines from the
	// narration (--quiet). Zero (false): shown.
	Quiet bool
	// MetricsAddr serves /metrics /healthz /readyz for the demo process on this
	// address (--metrics-addr). Empty: not served.
	MetricsAddr string
	// ConsoleAddr serves the on-call console (outbox console, read-only) on
	// this address while the demo runs, and its URL is printed (--console).
	// DefaultConfig: 127.0.0.1:0, a free port. Empty: no console.
	ConsoleAddr string
	// LingerConsole keeps the console, Postgres and Kafka up this long after
	// the report, to look around (--linger-console); Ctrl-C ends it early.
	// Zero: the demo ends with the report.
	LingerConsole time.Duration
	// ConsoleToken lets the console replay and quarantine dead letters, for
	// requests that carry it (--console-token). Empty: read-only.
	ConsoleToken string
	// DeclineEvery makes the payment API decline the first charge of about
	// one order in DeclineEvery with 422 (--decline-every): dead letters to
	// replay from the console while it lingers (the stages are restarted
	// then). Zero: none.
	DeclineEvery int
	// OnReport, when set and the console lingers, receives the report
	// before the linger, so the caller can print it first. Zero (nil), or no
	// linger: the caller prints the report Run returns.
	OnReport func(*Report)

	// Binary is the outbox executable the stages run as child processes
	// (`Binary relay ...`, `Binary sink ...`). Empty: this process's own
	// executable.
	Binary string
	// StageEnv is added to the stage processes' environment, after this
	// process's own. Empty: they inherit it as it is.
	StageEnv []string
	// Logger receives the demo's own logs (the throwaway Postgres, progress
	// samples that failed). Nil: discarded.
	Logger *slog.Logger
}

// DefaultConfig returns the settings `outbox demo` runs with when no flag
// changes them.
func DefaultConfig() Config {
	return Config{
		Orders:        300,
		Rate:          60,
		Duplicates:    0.2,
		ChaosInterval: 5 * time.Second,
		Timeout:       5 * time.Minute,
		ConsoleAddr:   "127.0.0.1:0",
	}
}

// Validate reports every setting Run would refuse, each error naming the
// `outbox demo` flag that sets the field.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Orders < 1 {
		bad("--orders %d: place at least 1 order", c.Orders)
	}
	if !(c.Rate > 0) || math.IsInf(c.Rate, 0) {
		bad("--rate %v: orders per second must be a positive number", c.Rate)
	}
	if !(c.Duplicates >= 0 && c.Duplicates <= 1) {
		bad("--duplicates %v: the share of orders sent twice is from 0 to 1", c.Duplicates)
	}
	if c.Chaos && c.ChaosInterval < MinChaosInterval {
		bad("--chaos-interval %s is below %s; stages could not rejoin between kills", c.ChaosInterval, MinChaosInterval)
	}
	if c.LingerConsole < 0 {
		bad("--linger-console %s: give a duration from 0", c.LingerConsole)
	}
	if c.LingerConsole > 0 && c.ConsoleAddr == "" {
		bad("--linger-console %s needs a console: give --console an address", c.LingerConsole)
	}
	if c.DeclineEvery < 0 {
		bad("--decline-every %d: give 0 (none) or a positive number", c.DeclineEvery)
	}
	if c.ConsoleToken != "" && c.ConsoleAddr == "" {
		bad("--console-token needs a console: give --console an address")
	}
	if c.Timeout <= 0 {
		bad("--timeout %s: give the pipeline a positive time to settle", c.Timeout)
	}
	switch c.KafkaKind {
	case "", KafkaKfake, KafkaApache:
		if c.KafkaKind != "" && len(c.Kafka.Brokers) > 0 {
			bad("--kafka %s starts a broker for the demo; --brokers (or OUTBOX_DEMO_BROKERS) names existing ones: give one of them", c.KafkaKind)
		}
	default:
		bad("--kafka %q: use %s or %s", c.KafkaKind, KafkaKfake, KafkaApache)
	}
	return errors.Join(errs...)
}
