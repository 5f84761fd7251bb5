package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// execOutbox runs this test binary as the outbox binary (main's dispatcher,
// see TestMain) with args, in an environment without the developer's OUTBOX_*
// settings plus env, and returns its exit code and output. It fails the test
// when the run outlasts limit.
func execOutbox(t *testing.T, env map[string]string, limit time.Duration, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Env = append(childEnv(env), execMainEnv+"=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("outbox %q still running after %s\nstdout:\n%s\nstderr:\n%s", args, limit, out.String(), errOut.String())
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("outbox %q: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// demoTmpDir is a fresh directory for a demo's TMPDIR, readable by the
// postgres user the throwaway cluster runs as when the test runs as root.
func demoTmpDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "outbox-demo-test-tmp-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// TestDemoAuditPasses runs the demo end to end, with chaos: real stage
// processes (this test binary re-executed as `outbox relay`, `transform`,
// `sink`), SIGKILLed and restarted at random, and checks the audit's verdict
// and that a passing run leaves nothing in its TMPDIR (no outbox-demo-logs-*).
func TestDemoAuditPasses(t *testing.T) {
	tmp := demoTmpDir(t)
	code, out, errOut := execOutbox(t, map[string]string{"TMPDIR": tmp}, 5*time.Minute,
		"demo", "--orders", "120", "--rate", "15", "--quiet", "--chaos", "--chaos-interval", "3s", "--timeout", "4m")
	t.Log(out)
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"orders accepted: 120", "0 duplicates, 0 outbox events missing", "max effects per event 1",
		"effecting calls carried the trace id of the order request", "stages, delivered/given: load 120/120, relay 120/120, transform 240/240",
		"60 deliveries of 12 charges", "0 non-2xx answers; forged signature answered 401", "60 raw webhooks in webhooks.acquirer (0 duplicates",
		"0 keys whose last record is not the newest, 0 records older than the one before them",
		"large orders: 3 placed with a 1.5 MiB attachment", "console: http://127.0.0.1:", "PASS:"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit lacks %q", want)
		}
	}
	if strings.Contains(out, "stage logs:") {
		t.Error("a passing run kept its temp logs")
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("the demo left %s in its TMPDIR", e.Name())
	}
}

// TestDemoApacheKafkaChaos runs the demo, with chaos, on a real Apache Kafka
// broker it starts itself (--kafka apache): topics created explicitly (the
// broker auto-creates none), real transactions, fencing and group rebalances.
// The broker is stopped and, as the run passes, the log folder that held its
// folder removed when the demo ends.
func TestDemoApacheKafkaChaos(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"demo", "--kafka", "apache", "--orders", "120", "--rate", "15", "--quiet", "--chaos", "--chaos-interval", "3s", "--timeout", "2m"}, &out, &errOut)
	t.Log(out.String())
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"kafka: Apache Kafka at 127.0.0.1:", "orders accepted: 120", "0 duplicates, 0 outbox events missing",
		"120 distinct in commands.payment, 0 duplicates", "120 distinct in commands.shipping, 0 duplicates", "max effects per event 1", "PASS:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`, (\d+) chaos kills`).FindStringSubmatch(out.String()); m == nil {
		t.Error("audit lacks its chaos kill count")
	} else if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Error("no stage was killed: the run did not test chaos")
	}
	m := regexp.MustCompile(`\(logs in ([^,)\s]+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatal("output lacks the log folder")
	}
	t.Cleanup(func() { os.RemoveAll(m[1]) })
	if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		left, _ := filepath.Glob(filepath.Join(m[1], "*"))
		t.Errorf("the demo's log folder %s (with its Kafka folder) is still there: %v", m[1], left)
	}
}

// TestDemoNotSettledFails: a run cut short by a tiny --timeout stops its
// stages, audits what is there and fails (exit 1), naming the stages that
// were behind with their counts, and keeps its logs where it says. The
// settings come from the environment, as a shell's exports would give them,
// and the shell's other OUTBOX_* variables must not reach the stages: a
// leaked OUTBOX_SLOT would make the relay create another slot than the one
// the demo waits for, and a leaked OUTBOX_METRICS_ADDR would make the relay
// fail to bind the port the demo itself serves on; either ends the run
// without an audit.
func TestDemoNotSettledFails(t *testing.T) {
	tmp := demoTmpDir(t)
	env := map[string]string{
		"TMPDIR": tmp, "OUTBOX_DEMO_ORDERS": "60", "OUTBOX_DEMO_RATE": "200", "OUTBOX_DEMO_QUIET": "true", "OUTBOX_DEMO_TIMEOUT": "1s",
		"OUTBOX_SLOT": "not_the_demos_slot", "OUTBOX_METRICS_ADDR": demoMetricsAddr(t),
	}
	code, out, errOut := execOutbox(t, env, 3*time.Minute, "demo")
	t.Log(out)
	if code != 1 {
		t.Errorf("demo exited %d, want 1\nstderr:\n%s", code, errOut)
	}
	for _, want := range []string{"the pipeline did not settle within --timeout 1s", "\nFAIL: the pipeline did not settle within --timeout 1s; behind: "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if !regexp.MustCompile(`behind: (load|relay|transform|sink-payment|sink-shipping) \d+ of \d+ `).MatchString(out) {
		t.Error("the FAIL line names no stage with its counts")
	}
	if strings.Contains(out, "PASS:") {
		t.Error("a run that did not settle printed PASS")
	}
	m := regexp.MustCompile(`stage logs: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("a failed run did not say where its logs are")
	}
	if !strings.HasPrefix(m[1], filepath.Join(tmp, "outbox-demo-logs-")) {
		t.Errorf("logs kept in %s, want a temp dir under TMPDIR %s", m[1], tmp)
	}
	if _, err := os.Stat(filepath.Join(m[1], "relay.log")); err != nil {
		t.Errorf("the kept logs lack the relay's: %v", err)
	}
}

// TestDemoFlagsRejected: bad values are usage errors (exit 2) that name the
// flag, before anything starts.
func TestDemoFlagsRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--orders", "0"}, "--orders 0"},
		{[]string{"--orders", "-5"}, "--orders -5"},
		{[]string{"--rate", "0"}, "--rate 0"},
		{[]string{"--rate", "NaN"}, "--rate NaN"},
		{[]string{"--rate", "-1"}, "--rate -1"},
		{[]string{"--duplicates", "1.5"}, "--duplicates 1.5"},
		{[]string{"--duplicates", "-0.1"}, "--duplicates -0.1"},
		{[]string{"--timeout", "0s"}, "--timeout 0s"},
		{[]string{"--timeout", "-1m"}, "--timeout -1m"},
		{[]string{"--chaos", "--chaos-interval", "1s"}, "--chaos-interval 1s"},
		{[]string{"--kafka", "redpanda"}, "--kafka"},
		{[]string{"--kafka", "apache", "--brokers", "127.0.0.1:9092"}, "--kafka"},
		{[]string{"--orders", "10", "extra"}, "unexpected arguments"},
		{[]string{"--linger-console", "-1s"}, "--linger-console -1s"},
		{[]string{"--linger-console", "1m", "--console", ""}, "--linger-console 1m0s needs a console"},
	} {
		args := append([]string{"demo"}, tc.args...)
		r := runBinary(t, nil, time.Minute, args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.flag) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and a usage error naming %q", args, r.code, r.stderr, tc.flag)
		}
		if r.stdout != "" {
			t.Errorf("%q started something: %s", args, r.stdout)
		}
		if r.took > 20*time.Second {
			t.Errorf("%q took %s to be rejected", args, r.took)
		}
	}
}

// TestDemoAndBenchEnvRejected: a bad value from the environment is rejected
// as the flag's would be, and the error names the variable, which the user
// may have forgotten exporting. A flag on the command line still wins.
func TestDemoAndBenchEnvRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want []string
	}{
		{map[string]string{"OUTBOX_DEMO_ORDERS": "0"}, []string{"demo"}, []string{"--orders 0", "OUTBOX_DEMO_ORDERS"}},
		{map[string]string{"OUTBOX_DEMO_ORDERS": "-5"}, []string{"demo"}, []string{"--orders -5", "OUTBOX_DEMO_ORDERS"}},
		{map[string]string{"OUTBOX_DEMO_ORDERS": "many"}, []string{"demo"}, []string{"OUTBOX_DEMO_ORDERS=many"}},
		{map[string]string{"OUTBOX_DEMO_ORDERS": "10", "OUTBOX_DEMO_TIMEOUT": "0s"}, []string{"demo", "--orders", "0"}, []string{"--orders 0", "--timeout 0s", "OUTBOX_DEMO_TIMEOUT"}},
		{map[string]string{"OUTBOX_DEMO_KAFKA": "apache", "OUTBOX_DEMO_BROKERS": "127.0.0.1:1"}, []string{"demo"}, []string{"--kafka apache", "OUTBOX_DEMO_KAFKA", "OUTBOX_DEMO_BROKERS"}},
		{map[string]string{"OUTBOX_BENCH_EVENTS": "-1"}, []string{"bench", "relay"}, []string{"--events -1", "OUTBOX_BENCH_EVENTS"}},
	} {
		r := runBinary(t, tc.env, time.Minute, tc.args...)
		if r.code != 2 || r.stdout != "" || r.took > 20*time.Second {
			t.Errorf("env %v, %q: exit %d after %s, stdout %q; want exit 2 at once, nothing started\n%s", tc.env, tc.args, r.code, r.took, r.stdout, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("env %v, %q: stderr lacks %q:\n%s", tc.env, tc.args, w, r.stderr)
			}
		}
		if strings.Contains(r.stderr, "OUTBOX_DEMO_ORDERS") && slices.Contains(tc.args, "--orders") {
			t.Errorf("env %v, %q: the error blames the variable although --orders was given:\n%s", tc.env, tc.args, r.stderr)
		}
	}
}

// TestDemoAndBenchCommandLine: demo and bench are commands like the others:
// help exits 0 and names each flag's variable, an unknown flag or action is a
// short usage error, and bench without a target lists its targets.
func TestDemoAndBenchCommandLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want []string // on stdout for exit 0, else on stderr
	}{
		{[]string{"demo", "-h"}, 0, []string{"--orders int", "OUTBOX_DEMO_ORDERS", "(default 300)", "--timeout", "OUTBOX_DEMO_TIMEOUT", "OUTBOX_DEMO_DATABASE_URL", "OUTBOX_DEMO_BROKERS", "OUTBOX_LOG_LEVEL"}},
		{[]string{"bench", "relay", "-h"}, 0, []string{"--events int", "OUTBOX_BENCH_EVENTS", "(default 1000000)", "--relay-cpuprofile", "OUTBOX_BENCH_BROKERS"}},
		{[]string{"bench", "-h"}, 0, []string{"relay"}},
		{[]string{"bench"}, 2, []string{"relay"}},
		{[]string{"bench", "nosuch"}, 2, []string{`unknown action "nosuch"`}},
		{[]string{"demo", "--no-such-flag"}, 2, []string{"unknown flag: --no-such-flag", "outbox demo -h"}},
		{[]string{"bench", "relay", "--no-such-flag"}, 2, []string{"unknown flag: --no-such-flag", "outbox bench relay -h"}},
		{[]string{"demo", "--orders"}, 2, []string{"flag needs an argument"}},
	} {
		r := runBinary(t, nil, time.Minute, tc.args...)
		got := r.stderr
		if tc.code == 0 {
			got = r.stdout
		}
		if r.code != tc.code {
			t.Errorf("outbox %q: exit %d, want %d\n%s%s", tc.args, r.code, tc.code, r.stdout, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("outbox %q: output lacks %q:\n%s", tc.args, w, got)
			}
		}
		if tc.code == 2 && tc.args[len(tc.args)-1] != "bench" && strings.Count(r.stderr, "\n") > 2 {
			t.Errorf("outbox %q: a usage error of more than two lines:\n%s", tc.args, r.stderr)
		}
	}
}

// TestDemoCheck: --check shows the demo's effective settings with where each
// came from, the database password redacted, and starts nothing. The stages'
// own OUTBOX_DATABASE_URL and OUTBOX_BROKERS do not reach it: a shell set up
// for production must not turn the demo onto the production database.
func TestDemoCheck(t *testing.T) {
	t.Parallel()
	env := map[string]string{"OUTBOX_DEMO_ORDERS": "7", "OUTBOX_DEMO_DATABASE_URL": "postgres://u:s3cret@127.0.0.1:1/db",
		"OUTBOX_DATABASE_URL": "postgres://prod:s3cret@127.0.0.2:1/prod", "OUTBOX_BROKERS": "127.0.0.2:9092"}
	r := runBinary(t, env, time.Minute, "demo", "--check", "--rate", "3")
	got := strings.Join(strings.Fields(r.stdout), " ")
	if r.code != 0 || r.took > 20*time.Second {
		t.Fatalf("demo --check: exit %d after %s, want 0 at once\n%s%s", r.code, r.took, r.stdout, r.stderr)
	}
	for _, w := range []string{"--orders 7 env OUTBOX_DEMO_ORDERS", "--rate 3 flag", "--timeout 5m0s default", "--database-url postgres://u:xxxxx@127.0.0.1:1/db env OUTBOX_DEMO_DATABASE_URL"} {
		if !strings.Contains(got, w) {
			t.Errorf("demo --check lacks %q:\n%s", w, r.stdout)
		}
	}
	if strings.Contains(r.stdout+r.stderr, "s3cret") {
		t.Errorf("demo --check printed the password:\n%s%s", r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "127.0.0.2") {
		t.Errorf("demo --check took the stages' OUTBOX_DATABASE_URL or OUTBOX_BROKERS:\n%s", r.stdout)
	}
}

// demoMetricsAddr is a loopback address nothing listens on just now.
func demoMetricsAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestUnknownCommandAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"nope"}, &out, &errOut); code != 2 {
		t.Fatalf("unknown command exited %d", code)
	}
	if !strings.Contains(errOut.String(), "unknown command") {
		t.Fatalf("stderr: %s", errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"doctor"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--database-url") {
		t.Fatalf("doctor without a URL: exit %d, %s", code, errOut.String())
	}
}

// TestBenchRelaySmall runs `outbox bench relay` at a tiny scale, every phase,
// with the relay as a child process of this binary.
func TestBenchRelaySmall(t *testing.T) {
	tmp := demoTmpDir(t)
	code, out, errOut := execOutbox(t, map[string]string{"TMPDIR": tmp}, 4*time.Minute,
		"bench", "relay", "--events", "300", "--payload", "100", "--rate", "100", "--duration", "2s", "--huge-events", "500")
	t.Log(out)
	if code != 0 {
		t.Fatalf("bench exited %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"machine: ", "(b) bare pglogrepl loop", "(a) relay drain to read_committed consumer", "(d) relay CPU",
		"(c) steady load: 100 events/s", "commit-to-visible latency p50", "relayed 500 events in"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	left, _ := os.ReadDir(tmp)
	for _, e := range left {
		t.Errorf("the bench left %s in its TMPDIR", e.Name())
	}
}

// TestBenchRelayFlagsRejected: bad sizes are usage errors naming the flag.
func TestBenchRelayFlagsRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--events", "-1"}, "--events -1"},
		{[]string{"--rate", "-5"}, "--rate -5"},
		{[]string{"--rate", "2000000"}, "--rate 2000000"},
		{[]string{"--rate", "10", "--duration", "1ms"}, "--duration 1ms"},
		{[]string{"--huge-events", "-3"}, "--huge-events -3"},
		{[]string{"--events", "0", "--rate", "0", "--huge-events", "0"}, "nothing to measure"},
	} {
		args := append([]string{"bench", "relay"}, tc.args...)
		r := runBinary(t, nil, time.Minute, args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.flag) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and a usage error naming %q", args, r.code, r.stderr, tc.flag)
		}
		if r.stdout != "" {
			t.Errorf("%q started something: %s", args, r.stdout)
		}
	}
}
