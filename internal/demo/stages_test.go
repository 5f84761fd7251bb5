package demo

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStageFailure: a stage process that ends by itself is a failure
// naming the stage and its log; one that chaos kills, or the demo stops, is
// not.
func TestStageFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gone := &stage{name: "sink-payment", bin: "/bin/sh", args: []string{"-c", "echo listen: address already in use; exit 1"},
		logPath: filepath.Join(dir, "sink-payment.log")}
	if err := gone.start(); err != nil {
		t.Fatal(err)
	}
	<-gone.done
	err := gone.failure()
	if err == nil || !strings.Contains(err.Error(), "stage sink-payment exited on its own (exit status 1)") || !strings.Contains(err.Error(), gone.logPath) {
		t.Fatalf("failure() = %v, want the stage, its exit and its log", err)
	}

	killed := &stage{name: "relay", bin: "/bin/sleep", args: []string{"60"}, logPath: filepath.Join(dir, "relay.log")}
	if err := killed.start(); err != nil {
		t.Fatal(err)
	}
	if err := killed.kill(); err != nil {
		t.Fatal(err)
	}
	if err := killed.failure(); err != nil {
		t.Fatalf("a stage chaos killed is no failure: %v", err)
	}
	if err := killed.start(); err != nil { // chaos restarts it
		t.Fatal(err)
	}
	killed.stop(5 * time.Second)
	if err := killed.failure(); err != nil {
		t.Fatalf("a stage the demo stopped is no failure: %v", err)
	}
}
