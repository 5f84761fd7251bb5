package writerbench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/migrations"
)

// Row is one measured case.
type Row struct {
	Case    Case
	Writers int
	// Sample is the case's rounds together.
	Sample Sample
	// WALBytesPerTx is the WAL the server wrote during the case per
	// transaction (the whole server's: on a shared one, others' too).
	WALBytesPerTx float64
	// Load1 is the 1-minute load average when the case's last round ended.
	Load1 float64
	// Ratio is the baseline's transactions per second over this case's at
	// the same mode and writers: 1.3 means the case's transactions cost
	// 1.3 times the baseline's. RatioMin and RatioMax are the lowest and
	// highest of the rounds' own ratios. CPURatio is the case's CPU per
	// transaction (client and server) over the baseline's, 0 when the
	// server's is unknown. All 0 for the baseline itself.
	Ratio, RatioMin, RatioMax, CPURatio float64
	// Statements are pg_stat_statements' figures (Config.Statements).
	Statements []Statement

	perRound []float64 // tx/s of each round
	wal      float64
}

// Statement is one statement of a case as pg_stat_statements saw it.
type Statement struct {
	Query string
	// CallsPerTx and ServerTimePerTx are per committed transaction.
	CallsPerTx      float64
	ServerTimePerTx time.Duration
	// WALBytesPerCall is the WAL one execution wrote.
	WALBytesPerCall float64

	calls, wal float64
	time       time.Duration
}

// Result is a whole run.
type Result struct {
	CPUs int
	Rows []Row
}

// warmUp is how many transactions per writer run before a case is first
// measured: every connection prepares its statements and the caches are warm.
const warmUp = 20

// Run measures every case Config names and prints the table to out (nil
// discards it), the rows of a mode and writer count once its rounds end.
func Run(ctx context.Context, cfg Config, out io.Writer) (_ *Result, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if out == nil {
		out = io.Discard
	}
	settings := map[string]string{"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
	if cfg.Statements {
		settings["shared_preload_libraries"] = "pg_stat_statements"
	}
	cluster, err := pgcluster.Start(ctx, pgcluster.Config{URL: cfg.DatabaseURL, Settings: settings, DisableContainer: true})
	if err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = cluster.Stop(sctx)
	}()
	name := fmt.Sprintf("bench_writer_%d", time.Now().UnixNano())
	url, err := cluster.CreateDatabase(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("bench writer: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if dropErr := cluster.DropDatabase(sctx, name); dropErr != nil && err == nil {
			err = fmt.Errorf("bench writer: %w", dropErr)
		}
	}()
	m, err := migrations.Open(ctx, url, "outbox", nil)
	if err != nil {
		return nil, err
	}
	_, err = m.Up(ctx)
	_ = m.Close()
	if err != nil {
		return nil, err
	}
	orders, err := Open(ctx, url, slices.Max(cfg.Writers))
	if err != nil {
		return nil, err
	}
	defer orders.Close()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("bench writer: %w", err)
	}
	defer admin.Close(context.Background())
	if cfg.Statements {
		if _, err := admin.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
			return nil, fmt.Errorf("bench writer: --statements needs pg_stat_statements: %w", err)
		}
		if _, err := admin.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
			return nil, fmt.Errorf("bench writer: --statements: %w (pg_stat_statements must be in shared_preload_libraries)", err)
		}
	}

	res := &Result{CPUs: runtime.NumCPU()}
	where, box := "a throwaway local cluster", " and the writers on this box"
	if cluster.Source() == pgcluster.SourceURL {
		where, box = "the server at --database-url", ""
	}
	var server, fsync, syncCommit string
	if err := admin.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')`).Scan(&server, &fsync, &syncCommit); err != nil {
		return nil, fmt.Errorf("bench writer: %w", err)
	}
	fmt.Fprintf(out, "machine: %d CPUs, load average %s at the start; Postgres %s (%s, fsync=%s, synchronous_commit=%s)%s\n",
		res.CPUs, loadAverage(), server, where, fsync, syncCommit, box)
	fmt.Fprintf(out, "each case: %d transactions per writer to warm up, then %s measured in %d rounds taken in turn with the other cases of its mode and writers;\n"+
		"RT: round trips; CPU/TX C+S: µs of CPU per transaction in this process (C) and in the server's processes (S, ? when not on this machine);\n"+
		"RATIO: baseline tx/s / case tx/s, MIN and MAX of the rounds' own; CPU RATIO: the same of CPU per transaction\n\n", warmUp, cfg.Duration, cfg.Rounds)
	fmt.Fprintf(out, rowFormat, "MODE", "CASE", "WRITERS", "TX/S", "P50", "P99", "RT/TX", "WAL B/TX", "CPU/TX C+S", "LOAD1", "RATIO", "MIN", "MAX", "CPU RATIO")

	slice := cfg.Duration / time.Duration(cfg.Rounds)
	for _, writers := range cfg.Writers {
		for _, mode := range cfg.Modes {
			rows := make([]Row, len(Outboxes))
			for i, ob := range Outboxes {
				rows[i] = Row{Case: Case{Mode: Mode(mode), Outbox: ob}, Writers: writers}
			}
			for round := range cfg.Rounds {
				// Each round starts at another case, so none is always the
				// first after a switch.
				for k := range rows {
					r := &rows[(round+k)%len(rows)]
					if err := measure(ctx, orders, admin, cfg, r, slice, round == 0); err != nil {
						return res, err
					}
				}
			}
			for i := range rows {
				finish(&rows[i], &rows[0])
				r := rows[i]
				ratio, lo, hi, cpuRatio := "-", "-", "-", "-"
				if i > 0 {
					ratio, lo, hi = fmt.Sprintf("%.2f", r.Ratio), fmt.Sprintf("%.2f", r.RatioMin), fmt.Sprintf("%.2f", r.RatioMax)
					if r.CPURatio > 0 {
						cpuRatio = fmt.Sprintf("%.2f", r.CPURatio)
					}
				}
				fmt.Fprintf(out, rowFormat, mode, r.Case.Outbox, fmt.Sprint(writers), fmt.Sprintf("%.0f", r.Sample.PerSecond()),
					micros(r.Sample.Quantile(0.5)), micros(r.Sample.Quantile(0.99)), fmt.Sprintf("%.1f", r.Sample.RoundTripsPerTx()),
					fmt.Sprintf("%.0f", r.WALBytesPerTx), cpuPerTx(r.Sample.CPUPerTx()), fmt.Sprintf("%.2f", r.Load1), ratio, lo, hi, cpuRatio)
				res.Rows = append(res.Rows, r)
			}
		}
	}
	fmt.Fprintf(out, "\nload average %s at the end\n", loadAverage())
	if cfg.Statements {
		printStatements(out, res.Rows)
	}
	return res, nil
}

const rowFormat = "%-10s  %-20s  %7s  %7s  %9s  %9s  %5s  %8s  %12s  %5s  %5s  %5s  %5s  %9s\n"

// cpuPerTx shows client and server CPU per transaction in µs: "90+410".
func cpuPerTx(c CPU) string {
	server := "?"
	if c.Server >= 0 {
		server = fmt.Sprint(c.Server.Microseconds())
	}
	return fmt.Sprintf("%d+%s", c.Client.Microseconds(), server)
}

// measure runs one round of r's case for d, after a warm-up when asked, and
// adds what it measured to r.
func measure(ctx context.Context, orders *Orders, admin *pgx.Conn, cfg Config, r *Row, d time.Duration, warm bool) error {
	if warm {
		if _, err := orders.Drive(ctx, r.Case, Load{Writers: r.Writers, Transactions: int64(warmUp * r.Writers)}); err != nil {
			return err
		}
	}
	if cfg.Statements {
		if _, err := admin.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
			return err
		}
	}
	var lsn0 string
	if err := admin.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn0); err != nil {
		return err
	}
	s, err := orders.Drive(ctx, r.Case, Load{Writers: r.Writers, Duration: d})
	if err != nil {
		return err
	}
	r.Sample.add(s)
	r.perRound = append(r.perRound, s.PerSecond())
	r.Load1 = load1()
	var wal float64
	if err := admin.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::float8`, lsn0).Scan(&wal); err != nil {
		return err
	}
	r.wal += wal
	if cfg.Statements {
		return addStatements(ctx, admin, s.Transactions, r)
	}
	return nil
}

// finish computes r's per-transaction figures and its ratios to base.
func finish(r, base *Row) {
	if n := r.Sample.Transactions; n > 0 {
		r.WALBytesPerTx = r.wal / float64(n)
		for i := range r.Statements {
			st := &r.Statements[i]
			st.CallsPerTx, st.ServerTimePerTx = st.calls/float64(n), st.time/time.Duration(n)
			if st.calls > 0 {
				st.WALBytesPerCall = st.wal / st.calls
			}
		}
		sort.Slice(r.Statements, func(i, j int) bool { return r.Statements[i].time > r.Statements[j].time })
	}
	if r == base || r.Sample.PerSecond() == 0 {
		return
	}
	r.Ratio = base.Sample.PerSecond() / r.Sample.PerSecond()
	for i, tps := range r.perRound {
		if tps == 0 || i >= len(base.perRound) {
			continue
		}
		q := base.perRound[i] / tps
		if r.RatioMin == 0 || q < r.RatioMin {
			r.RatioMin = q
		}
		r.RatioMax = max(r.RatioMax, q)
	}
	c, b := r.Sample.CPUPerTx(), base.Sample.CPUPerTx()
	if c.Server >= 0 && b.Server >= 0 && b.Client+b.Server > 0 {
		r.CPURatio = float64(c.Client+c.Server) / float64(b.Client+b.Server)
	}
}

// addStatements adds pg_stat_statements' figures for this database, of the
// statements that ran at least once per transaction, to r.
func addStatements(ctx context.Context, admin *pgx.Conn, txs int64, r *Row) error {
	if txs == 0 {
		return nil
	}
	rows, err := admin.Query(ctx, `
SELECT regexp_replace(query, '\s+', ' ', 'g'), calls, total_exec_time, wal_bytes::float8
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND calls >= $1`, txs)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			q          string
			calls, wal float64
			ms         float64
		)
		if err := rows.Scan(&q, &calls, &ms, &wal); err != nil {
			return err
		}
		i := slices.IndexFunc(r.Statements, func(s Statement) bool { return s.Query == q })
		if i < 0 {
			r.Statements = append(r.Statements, Statement{Query: q})
			i = len(r.Statements) - 1
		}
		st := &r.Statements[i]
		st.calls += calls
		st.wal += wal
		st.time += time.Duration(ms * float64(time.Millisecond))
	}
	return rows.Err()
}

func printStatements(out io.Writer, rows []Row) {
	fmt.Fprintln(out, "\nserver time per transaction by statement (pg_stat_statements, execution only: no parse, network or commit flush)")
	for _, r := range rows {
		var total time.Duration
		for _, s := range r.Statements {
			total += s.ServerTimePerTx
		}
		fmt.Fprintf(out, "\n%s, writers=%d: %s per transaction in statements\n", r.Case, r.Writers, micros(total))
		for _, s := range r.Statements {
			q := s.Query
			if len(q) > 90 {
				q = q[:87] + "..."
			}
			fmt.Fprintf(out, "  %9s  %4.1f calls  %6.0f WAL B/call  %s\n", micros(s.ServerTimePerTx), s.CallsPerTx, s.WALBytesPerCall, q)
		}
	}
}

func micros(d time.Duration) string { return fmt.Sprintf("%dµs", d.Microseconds()) }

// loadAverage is /proc/loadavg's three load averages, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func load1() float64 {
	var l float64
	if _, err := fmt.Sscan(loadAverage(), &l); err != nil {
		return 0
	}
	return l
}
