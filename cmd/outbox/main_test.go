package main

import (
	"os"
	"testing"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
)

// TestMain runs main's dispatcher instead of the tests when a test (the demo,
// a crash test) started this binary as a stage process.
func TestMain(m *testing.M) {
	if os.Getenv(execMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := pgtest.Main(m)
	stopSecureKafka()
	kafkatest.StopShared()
	os.Exit(code)
}
