// Package relaybench measures the relay (`outbox bench relay`, issue 3):
// (a) backlog drain of single-event transactions, (b) the same backlog drained
// by a bare pglogrepl loop, (c) commit-to-visible latency at a fixed offered
// rate through a read_committed consumer, (d) relay CPU per event and peak
// RSS, and (e) throughput and peak RSS for one huge transaction. The relay
// runs as a child `outbox relay` process so its CPU and RSS are its own, not
// the embedded broker's or the load generator's.
package relaybench

import (
	"errors"
	"fmt"
	"time"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/relay"
)

// MaxRate is the highest Config.Rate: the load generator spaces events by
// whole nanoseconds.
const MaxRate = 1_000_000

// Config is one bench run. Each field's doc names the `outbox bench relay`
// flag that sets it and what its zero value means; a zero phase size skips
// the phase. DefaultConfig holds the values the command starts from.
type Config struct {
	// DatabaseURL is the Postgres server to use (--database-url); a database
	// bench_relay_<unix time> is created on it. Empty: a throwaway local
	// cluster, stopped at the end.
	DatabaseURL string
	// Kafka reaches existing brokers (--brokers and the --kafka-tls and
	// --kafka-sasl flags). No Brokers: an embedded kfake in this process.
	Kafka kafkaconn.Config
	// Events is the backlog of single-event transactions the drain phases
	// (a, b, d) relay (--events). Zero skips them. DefaultConfig: 1,000,000.
	Events int
	// Payload is the payload size of every event in bytes (--payload). Zero:
	// the smallest JSON payload. DefaultConfig: 500.
	Payload int
	// Rate is the events per second offered in the steady phase (c)
	// (--rate), at most MaxRate. Zero skips the phase. DefaultConfig: 1,000.
	Rate int
	// Duration is how long the steady phase offers load (--duration); with a
	// Rate it must offer at least one event. Unused without Rate.
	// DefaultConfig: 20s.
	Duration time.Duration
	// HugeEvents is the size of the one Postgres transaction of phase (e)
	// (--huge-events). Zero skips it. DefaultConfig: 1,000,000.
	HugeEvents int
	// MaxBatchEvents is the relay's --max-batch-events (--max-batch-events).
	// Zero: the relay's own default. DefaultConfig: 5,000.
	MaxBatchEvents int
	// MaxLatency is the relay's --max-latency (--max-latency), the adaptive
	// batching's budget. Zero: never wait, commit as soon as the stream is
	// quiet. DefaultConfig: relay.DefaultMaxLatency.
	MaxLatency time.Duration
	// Linger is the relay's --linger (--linger), a fixed wait instead of the
	// adaptive one. Zero: adaptive, the relay's default.
	Linger time.Duration
	// RelayCPUProfile is where the relay writes the CPU profile of the drain
	// phase (--relay-cpuprofile); the steady phase writes PATH.steady and a
	// heap profile PATH.steady.mem. Empty: no profiles.
	RelayCPUProfile string

	// Binary is the outbox executable the relay runs as (`Binary relay ...`).
	// Empty: this process's own executable.
	Binary string
	// RelayEnv is added to the relay processes' environment, after this
	// process's own and OUTBOX_LOG_LEVEL=warn. Empty: nothing more.
	RelayEnv []string
}

// DefaultConfig returns the settings `outbox bench relay` runs with when no
// flag changes them.
func DefaultConfig() Config {
	return Config{
		Events:         1_000_000,
		Payload:        500,
		Rate:           1000,
		Duration:       20 * time.Second,
		HugeEvents:     1_000_000,
		MaxBatchEvents: 5000,
		MaxLatency:     relay.DefaultMaxLatency,
	}
}

// Validate reports every setting Run would refuse, each error naming the
// `outbox bench relay` flag that sets the field.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, f := range []struct {
		flag string
		n    int
	}{{"events", c.Events}, {"payload", c.Payload}, {"huge-events", c.HugeEvents}, {"max-batch-events", c.MaxBatchEvents}} {
		if f.n < 0 {
			bad("--%s %d: not below 0 (0 skips or takes the default)", f.flag, f.n)
		}
	}
	switch {
	case c.Rate < 0 || c.Rate > MaxRate:
		bad("--rate %d: events per second from 0 (skips the steady phase) to %d", c.Rate, MaxRate)
	case c.Rate > 0 && c.Duration < time.Second/time.Duration(c.Rate):
		bad("--duration %s: the steady phase at --rate %d offers no event in that time", c.Duration, c.Rate)
	}
	if c.MaxLatency < 0 {
		bad("--max-latency %s: not below 0", c.MaxLatency)
	}
	if c.Linger < 0 {
		bad("--linger %s: not below 0", c.Linger)
	}
	if len(c.Kafka.Brokers) > 0 {
		if _, err := c.Kafka.Opts(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Events == 0 && c.Rate == 0 && c.HugeEvents == 0 {
		bad("--events, --rate and --huge-events are all 0: nothing to measure")
	}
	return errors.Join(errs...)
}
