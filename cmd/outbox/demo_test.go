package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDemoAuditPasses runs the demo end to end, with chaos: real stage
// processes (this test binary re-executed as `outbox relay`, `transform`,
// `sink`), SIGKILLed and restarted at random, and checks the audit's verdict.
func TestDemoAuditPasses(t *testing.T) {
	var out, errOut bytes.Buffer
	// The stage logs stay when the test fails, for the one who reads why.
	logs, err := os.MkdirTemp("", "outbox-demo-test-logs-")
	if err != nil {
		t.Fatal(err)
	}
	code := run([]string{"demo", "--orders", "120", "--rate", "15", "--quiet", "--chaos", "--chaos-interval", "3s", "--timeout", "4m", "--log-dir", logs}, &out, &errOut)
	t.Log(out.String())
	if code != 0 {
		t.Fatalf("demo exited %d (stage logs kept in %s)\nstdout:\n%s\nstderr:\n%s", code, logs, out.String(), errOut.String())
	}
	t.Cleanup(func() {
		if !t.Failed() {
			_ = os.RemoveAll(logs)
		}
	})
	for _, want := range []string{"orders accepted: 120", "0 duplicates, 0 outbox events missing", "max effects per event 1", "effecting calls carried the trace id of the order request", "PASS:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("audit lacks %q", want)
		}
	}
}

// TestDemoApacheKafkaChaos runs the demo, with chaos, on a real Apache Kafka
// broker it starts itself (--kafka apache): topics created explicitly (the
// broker auto-creates none), real transactions, fencing and group rebalances.
// The broker is stopped and its folder removed when the demo ends.
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
	m := regexp.MustCompile(`\(logs in (\S+)\)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatal("output lacks the log folder")
	}
	t.Cleanup(func() { os.RemoveAll(m[1]) })
	if left, _ := filepath.Glob(filepath.Join(m[1], "kafka-*")); len(left) > 0 {
		t.Errorf("the demo's Kafka folder is still there: %v", left)
	}
}

// TestDemoNotSettledFails: a run cut short by --timeout, here before the load
// generator has even placed every order, audits what is there and fails.
func TestDemoNotSettledFails(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"demo", "--orders", "100", "--rate", "10", "--quiet", "--timeout", "2s", "--log-dir", t.TempDir()}, &out, &errOut)
	t.Log(out.String())
	if code != 1 {
		t.Errorf("demo exited %d, want 1\nstderr:\n%s", code, errOut.String())
	}
	for _, want := range []string{"the pipeline did not settle within --timeout 2s", "\nFAIL: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "PASS:") {
		t.Error("a run that did not settle printed PASS")
	}
}

func TestDemoKafkaFlag(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"demo", "--kafka", "redpanda"},
		{"demo", "--kafka", "apache", "--brokers", "127.0.0.1:9092"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--kafka") {
			t.Errorf("%q: exit %d, stderr %q; want a usage error naming --kafka", args, code, errOut.String())
		}
		if out.Len() > 0 {
			t.Errorf("%q started something: %s", args, out.String())
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
