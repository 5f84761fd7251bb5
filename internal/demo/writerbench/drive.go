package writerbench

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Load is how hard Drive pushes: Writers goroutines, each placing one order
// after another, until Transactions have been placed or, when Transactions
// is 0, until Duration has passed.
type Load struct {
	Writers      int
	Transactions int64
	Duration     time.Duration
}

// Sample is what Drive measured.
type Sample struct {
	// Transactions committed.
	Transactions int64
	// Elapsed from the first transaction's start to the last one's end.
	Elapsed time.Duration
	// Latencies of every transaction, BEGIN to COMMIT answered, sorted.
	Latencies []time.Duration
	// RoundTrips are the queries and batches sent (BEGIN and COMMIT
	// included), each one round trip to the server.
	RoundTrips int64
	// CPU is what the writers and the server used meanwhile; Server is -1
	// when the server's processes cannot be read.
	CPU CPU
}

// add merges o into s, as if one had run after the other.
func (s *Sample) add(o Sample) {
	s.Transactions += o.Transactions
	s.Elapsed += o.Elapsed
	s.RoundTrips += o.RoundTrips
	s.Latencies = append(s.Latencies, o.Latencies...)
	slices.Sort(s.Latencies)
	s.CPU.Client += o.CPU.Client
	if s.CPU.Server < 0 || o.CPU.Server < 0 {
		s.CPU.Server = -1
	} else {
		s.CPU.Server += o.CPU.Server
	}
}

// PerSecond is the committed transactions per second.
func (s Sample) PerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Transactions) / s.Elapsed.Seconds()
}

// Quantile is the latency below which a share q of the transactions took.
func (s Sample) Quantile(q float64) time.Duration {
	if len(s.Latencies) == 0 {
		return 0
	}
	i := int(q*float64(len(s.Latencies))+0.5) - 1
	return s.Latencies[min(max(i, 0), len(s.Latencies)-1)]
}

// CPUPerTx is CPU per committed transaction (Server stays -1 when unknown).
func (s Sample) CPUPerTx() CPU {
	if s.Transactions == 0 {
		return CPU{Server: -1}
	}
	c := CPU{Client: s.CPU.Client / time.Duration(s.Transactions), Server: s.CPU.Server}
	if c.Server > 0 {
		c.Server /= time.Duration(s.Transactions)
	}
	return c
}

// RoundTripsPerTx is RoundTrips per committed transaction.
func (s Sample) RoundTripsPerTx() float64 {
	if s.Transactions == 0 {
		return 0
	}
	return float64(s.RoundTrips) / float64(s.Transactions)
}

// Drive places orders of case c under load l and measures them. The first
// failed transaction stops every writer and is returned.
func (o *Orders) Drive(ctx context.Context, c Case, l Load) (Sample, error) {
	if l.Writers < 1 {
		return Sample{}, errors.New("writerbench: Load.Writers must be at least 1")
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		started  atomic.Int64
		wg       sync.WaitGroup
		perGo    = make([][]time.Duration, l.Writers)
		trips0   = o.trips.n.Load()
		cpu0     = o.cpu.read()
		begin    = time.Now()
		deadline = begin.Add(l.Duration)
	)
	more := func() bool {
		if ctx.Err() != nil {
			return false
		}
		if l.Transactions > 0 {
			return started.Add(1) <= l.Transactions
		}
		return time.Now().Before(deadline)
	}
	for g := range l.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for more() {
				t0 := time.Now()
				if err := o.Tx(ctx, c); err != nil {
					cancel(err)
					return
				}
				perGo[g] = append(perGo[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	s := Sample{Elapsed: time.Since(begin), RoundTrips: o.trips.n.Load() - trips0, CPU: o.cpu.read()}
	s.CPU.Client -= cpu0.Client
	if s.CPU.Server >= 0 && cpu0.Server >= 0 {
		s.CPU.Server -= cpu0.Server
	} else {
		s.CPU.Server = -1
	}
	if err := context.Cause(ctx); err != nil {
		return s, err
	}
	for _, ls := range perGo {
		s.Latencies = append(s.Latencies, ls...)
	}
	slices.Sort(s.Latencies)
	s.Transactions = int64(len(s.Latencies))
	return s, nil
}

// roundTrips counts what the pool's connections send: each query (BEGIN and
// COMMIT are queries to pgx) and each batch is one round trip. Statement
// preparation on a connection's first use of a statement is not counted: a
// warm-up does it before anything is measured.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}

func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}

func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
