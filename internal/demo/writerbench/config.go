// Package writerbench measures what the outbox writer adds to an order
// service's transaction (issue 11): an order row and three line items
// alone, against the same transaction with an Idempotency-Key claim, an
// order.created event and the stored response, at 1 and 16 concurrent
// writers, statement by statement and pipelined.
//
// It sits beside relaybench under internal/demo, in front of the first stage
// of the pipeline: it drives outbox/ (the writer library) against a real
// Postgres and nothing downstream. `outbox bench writer` (cmd/outbox) runs it
// for a duration per case and prints the table (Run); outbox's
// BenchmarkRealisticOrderTx drives the same Orders from `go test -bench`.
package writerbench

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// MaxWriters is the most concurrent writers a case may have, MaxRounds the
// most rounds.
const (
	MaxWriters = 256
	MaxRounds  = 100
)

// Config is one `outbox bench writer` run. Each field's doc names the flag
// that sets it. DefaultConfig holds the values the command starts from.
type Config struct {
	// DatabaseURL is the Postgres server to use (--database-url); a database
	// bench_writer_<unix time> is created on it and dropped at the end.
	// Empty: a throwaway local cluster with fsync on, stopped at the end.
	DatabaseURL string
	// Duration is how long each case is measured in all, after its warm-up
	// (--duration). DefaultConfig: 6s.
	Duration time.Duration
	// Rounds splits each case's Duration into this many parts, measured in
	// turn with the other cases of the same mode and writers, so that a
	// change in what else the machine runs falls on every case alike
	// (--rounds). DefaultConfig: 3.
	Rounds int
	// Writers are the concurrent writer counts to measure, each from 1 to
	// MaxWriters (--writers). DefaultConfig: 1 and 16.
	Writers []int
	// Modes are how statements travel, "statements" and/or "batch"
	// (--modes). DefaultConfig: both.
	Modes []string
	// Statements adds each case's statements as pg_stat_statements saw them:
	// calls and server time per transaction, WAL per call (--statements).
	// The throwaway cluster preloads the extension; a server given by
	// DatabaseURL must have it in shared_preload_libraries. Default: off.
	Statements bool
}

// DefaultConfig returns the settings `outbox bench writer` runs with when no
// flag changes them.
func DefaultConfig() Config {
	return Config{Duration: 6 * time.Second, Rounds: 3, Writers: []int{1, 16}, Modes: []string{string(Statements), string(Batch)}}
}

// Validate reports every setting Run would refuse, each error naming the
// flag that sets the field.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Rounds < 1 || c.Rounds > MaxRounds {
		bad("--rounds %d: from 1 to %d", c.Rounds, MaxRounds)
	} else if c.Duration < 100*time.Millisecond*time.Duration(c.Rounds) {
		bad("--duration %s: at least 100ms per case and round (--rounds %d)", c.Duration, c.Rounds)
	}
	if len(c.Writers) == 0 {
		bad("--writers: name at least one writer count, e.g. 1,16")
	}
	for _, n := range c.Writers {
		if n < 1 || n > MaxWriters {
			bad("--writers %d: from 1 to %d concurrent writers", n, MaxWriters)
		}
	}
	if len(c.Modes) == 0 {
		bad("--modes: name at least one of %s, %s", Statements, Batch)
	}
	for _, m := range c.Modes {
		if !slices.Contains(Modes, Mode(m)) {
			bad("--modes %q: use %s and/or %s", m, Statements, Batch)
		}
	}
	return errors.Join(errs...)
}
