package main

import (
	"context"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
)

// benchWriterRowRe is one row of `outbox bench writer`'s table: mode, case,
// writers, tx/s, p50, p99, round trips, WAL bytes, CPU, load, ratio with the
// rounds' lowest and highest, CPU ratio.
var benchWriterRowRe = regexp.MustCompile(`^(statements|batch)\s+(without-outbox|with-outbox|with-outbox-stepwise)\s+(\d+)\s+(\d+)\s+(\d+)µs\s+(\d+)µs\s+([\d.]+)\s+(\d+)\s+(\d+)\+(\d+|\?)\s+([\d.]+)\s+(-|[\d.]+)\s+(-|[\d.]+)\s+(-|[\d.]+)\s+(-|[\d.]+)$`)

// TestBenchWriterShort runs `outbox bench writer` for a second per case on a
// throwaway cluster and checks the table: every case at every writer count,
// each with-outbox case's ratio a number, the baseline's "-", the round trips
// each case makes, and pg_stat_statements' breakdown. It leaves nothing in
// its TMPDIR.
func TestBenchWriterShort(t *testing.T) {
	t.Parallel()
	tmp := demoTmpDir(t)
	code, out, errOut := execOutbox(t, map[string]string{"TMPDIR": tmp}, 4*time.Minute,
		"bench", "writer", "--duration", "1s", "--statements")
	t.Log(out)
	require.Zero(t, code, "stderr:\n%s", errOut)
	require.Contains(t, out, "machine: ")
	require.Regexp(t, `load average [\d.]+ [\d.]+ [\d.]+ at the start`, out)
	require.Contains(t, out, "fsync=on")
	require.Contains(t, out, "server time per transaction by statement")
	require.Contains(t, out, "ClaimKeyWriteEvent", "the one statement with-outbox sends")

	rows := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		m := benchWriterRowRe.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		mode, ob, writers := m[1], m[2], m[3]
		rows[mode+"/"+ob+"/"+writers] = true
		tps, err := strconv.Atoi(m[4])
		require.NoError(t, err)
		require.Positive(t, tps, line)
		trips, err := strconv.ParseFloat(m[7], 64)
		require.NoError(t, err)
		want := map[string]float64{"statements/without-outbox": 4, "statements/with-outbox": 5, "statements/with-outbox-stepwise": 7}[mode+"/"+ob]
		if mode == "batch" {
			want = 3 // BEGIN, the batch, COMMIT
		}
		require.InDelta(t, want, trips, 0.05, "round trips per transaction: %s", line)
		require.NotEqual(t, "?", m[10], "the throwaway cluster's CPU is read: %s", line)
		if ob == "without-outbox" {
			for _, cell := range m[12:] {
				require.Equal(t, "-", cell, line)
			}
			continue
		}
		for _, cell := range m[12:] {
			r, err := strconv.ParseFloat(cell, 64)
			require.NoError(t, err, "ratios of %q are numbers", line)
			// A figure of speed, not bounded here (speed is the benchmark's
			// to report, never a test's to assert): a ratio of two measured
			// rates is positive and finite.
			require.Positive(t, r, line)
			require.False(t, math.IsInf(r, 0) || math.IsNaN(r), line)
		}
	}
	for _, w := range []string{"1", "16"} {
		for _, mode := range []string{"statements", "batch"} {
			for _, ob := range []string{"without-outbox", "with-outbox", "with-outbox-stepwise"} {
				require.True(t, rows[mode+"/"+ob+"/"+w], "no row for %s/%s at %s writers", mode, ob, w)
			}
		}
	}
	left, _ := os.ReadDir(tmp)
	for _, e := range left {
		t.Errorf("the bench left %s in its TMPDIR", e.Name())
	}
}

// TestBenchWriterOnGivenServer: with --database-url the bench creates its
// database on that server and drops it at the end.
func TestBenchWriterOnGivenServer(t *testing.T) {
	t.Parallel()
	url := pgtest.Cluster(t).URL()
	r := runBinary(t, nil, 2*time.Minute, "bench", "writer", "--database-url", url, "--duration", "200ms", "--rounds", "1", "--writers", "2", "--modes", "batch")
	require.Zero(t, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	require.Contains(t, r.stdout, "the server at --database-url")
	require.Regexp(t, `(?m)^batch\s+with-outbox\s+2\s+\d+`, r.stdout)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var left []string
	require.NoError(t, conn.QueryRow(ctx, `SELECT coalesce(array_agg(datname::text), '{}') FROM pg_database WHERE datname LIKE 'bench_writer_%'`).Scan(&left))
	require.Empty(t, left, "the bench's database is dropped")
}

// TestBenchWriterCheckAndBadFlags: --check prints the effective settings and
// starts nothing; a bad value is a usage error naming the flag (and the
// variable it came from).
func TestBenchWriterCheckAndBadFlags(t *testing.T) {
	t.Parallel()
	r := runBinary(t, map[string]string{"OUTBOX_BENCH_WRITERS": "4,8", "OUTBOX_BENCH_DATABASE_URL": "postgres://u:s3cret@127.0.0.1:1/db"},
		time.Minute, "bench", "writer", "--check", "--duration", "2s")
	require.Zero(t, r.code, r.stderr)
	got := strings.Join(strings.Fields(r.stdout), " ")
	for _, w := range []string{"--writers [4,8] env OUTBOX_BENCH_WRITERS", "--duration 2s flag", "--modes [statements,batch] default",
		"--database-url postgres://u:xxxxx@127.0.0.1:1/db env OUTBOX_BENCH_DATABASE_URL"} {
		require.Contains(t, got, w)
	}
	require.NotContains(t, r.stdout+r.stderr, "s3cret")
	require.Less(t, r.took, 20*time.Second, "--check starts nothing")

	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{[]string{"--writers", "0"}, nil, []string{"--writers 0"}},
		{[]string{"--writers", "1,300"}, nil, []string{"--writers 300"}},
		{[]string{"--modes", "pipelined"}, nil, []string{`--modes "pipelined"`}},
		{[]string{"--duration", "10ms"}, nil, []string{"--duration 10ms"}},
		{[]string{"--rounds", "0"}, nil, []string{"--rounds 0"}},
		{nil, map[string]string{"OUTBOX_BENCH_DURATION": "1ms"}, []string{"--duration 1ms", "OUTBOX_BENCH_DURATION"}},
		{[]string{"extra"}, nil, []string{"unexpected arguments"}},
	} {
		args := append([]string{"bench", "writer"}, tc.args...)
		r := runBinary(t, tc.env, time.Minute, args...)
		require.Equal(t, 2, r.code, "%q: stderr %s", args, r.stderr)
		require.Empty(t, r.stdout, "%q started something", args)
		for _, w := range tc.want {
			require.Contains(t, r.stderr, w, "%q", args)
		}
	}
}
