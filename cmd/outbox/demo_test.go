package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestDemoAuditPasses runs the demo end to end, with chaos: real stage
// processes (this test binary re-executed as `outbox relay`, `transform`,
// `sink`), SIGKILLed and restarted at random, and checks the audit's verdict.
func TestDemoAuditPasses(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"demo", "--orders", "120", "--rate", "15", "--quiet", "--chaos", "--chaos-interval", "3s", "--timeout", "4m"}, &out, &errOut)
	t.Log(out.String())
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"orders accepted: 120", "0 duplicates, 0 outbox events missing", "max effects per event 1", "effecting calls carried the trace id of the order request", "PASS:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("audit lacks %q", want)
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
