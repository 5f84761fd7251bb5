package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
		"effecting calls carried the trace id of the order request", "stages, delivered/given: load 120/120, relay 120/120, transform 240/240", "PASS:"} {
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
// were behind with their counts, and keeps its logs where it says.
func TestDemoNotSettledFails(t *testing.T) {
	tmp := demoTmpDir(t)
	code, out, errOut := execOutbox(t, map[string]string{"TMPDIR": tmp}, 3*time.Minute,
		"demo", "--orders", "60", "--rate", "200", "--quiet", "--timeout", "1s")
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
	} {
		args := append([]string{"demo"}, tc.args...)
		began := time.Now()
		code, out, errOut := execOutbox(t, nil, time.Minute, args...)
		if code != 2 || !strings.Contains(errOut, tc.flag) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and a usage error naming %q", args, code, errOut, tc.flag)
		}
		if out != "" {
			t.Errorf("%q started something: %s", args, out)
		}
		if took := time.Since(began); took > 20*time.Second {
			t.Errorf("%q took %s to be rejected", args, took)
		}
	}
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
		code, out, errOut := execOutbox(t, nil, time.Minute, args...)
		if code != 2 || !strings.Contains(errOut, tc.flag) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and a usage error naming %q", args, code, errOut, tc.flag)
		}
		if out != "" {
			t.Errorf("%q started something: %s", args, out)
		}
	}
}
