package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchCompareSmall runs `outbox bench compare` at a tiny scale: this
// relay and Debezium on Kafka Connect with exactly-once, on an Apache Kafka
// and a throwaway Postgres the command starts itself, one backlog and one
// steady workload. Each run fails unless a read_committed consumer saw
// every committed event; the test checks the table, the JSON and the PNG.
func TestBenchCompareSmall(t *testing.T) {
	t.Parallel()
	tmp := demoTmpDir(t)
	out := t.TempDir()
	jsonPath, pngPath := filepath.Join(out, "compare.json"), filepath.Join(out, "compare.png")
	code, stdout, stderr := execOutbox(t, map[string]string{"TMPDIR": tmp}, 8*time.Minute,
		"bench", "compare", "--systems", "relay,debezium", "--workloads", "backlog-batch,steady-1k", "--rounds", "1",
		"--batch-txns", "5", "--batch-rows", "200", "--steady-duration", "2s", "--json", jsonPath, "--png", pngPath)
	t.Log(stdout)
	if code != 0 {
		t.Fatalf("bench compare exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"machine: ", "round 1 backlog-batch", "relay events/s ×", "runs written to", "plot written to"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	var rep struct {
		Runs []struct {
			Workload, System string
			Events, Distinct int
			EventsPerSec     float64 `json:"events_per_sec"`
			P99              float64 `json:"p99_ms"`
		}
		Medians []json.RawMessage
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 4 || len(rep.Medians) != 4 {
		t.Fatalf("%d runs, %d medians; want 4 of each (2 systems × 2 workloads)", len(rep.Runs), len(rep.Medians))
	}
	for _, r := range rep.Runs {
		if r.Events == 0 || r.Distinct != r.Events || r.EventsPerSec <= 0 {
			t.Errorf("%s on %s: %d events, %d distinct seen, %.0f events/s", r.Workload, r.System, r.Events, r.Distinct, r.EventsPerSec)
		}
		if r.Workload == "steady-1k" && r.P99 <= 0 {
			t.Errorf("%s on %s: no latency", r.Workload, r.System)
		}
	}
	png, err := os.ReadFile(pngPath)
	if err != nil || len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Errorf("plot: %d bytes, %v", len(png), err)
	}
	left, _ := os.ReadDir(tmp)
	for _, e := range left {
		t.Errorf("the bench left %s in its TMPDIR", e.Name())
	}
}

// TestBenchCompareFlagsRejected: bad settings are usage errors naming the
// flag, and nothing starts.
func TestBenchCompareFlagsRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--systems", "maxwell"}, `unknown system "maxwell"`},
		{[]string{"--workloads", "steady-2k"}, `unknown workload "steady-2k"`},
		{[]string{"--rounds", "0"}, "--rounds 0"},
		{[]string{"--backlog-events", "0"}, "--backlog-events 0"},
		{[]string{"--steady-duration", "10ms"}, "--steady-duration 10ms"},
		{[]string{"--systems", ""}, "--systems: name at least one"},
	} {
		args := append([]string{"bench", "compare"}, tc.args...)
		r := runBinary(t, nil, time.Minute, args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.flag) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and a usage error naming %q", args, r.code, r.stderr, tc.flag)
		}
		if r.stdout != "" {
			t.Errorf("%q started something: %s", args, r.stdout)
		}
	}
}
