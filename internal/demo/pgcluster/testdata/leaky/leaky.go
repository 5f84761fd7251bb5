// Package leaky is a fixture for TestCheckDepsNamesTheChain: a package that
// links a test harness the way a careless import in cmd/outbox would.
// Wildcards (./...) skip testdata, so nothing builds it but that test.
package leaky

import _ "github.com/outboxrelay/outbox/internal/testkit/pgtest" // the leak under test
