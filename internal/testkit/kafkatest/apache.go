package kafkatest

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/demo/apachekafka"
)

// EnvKafka picks the cluster kafkatest.New gives tests: "apache" starts one
// real Apache Kafka broker per test binary with scripts/kafka.sh; "kfake" or
// empty is franz-go's in-process kfake, for fast unit tests.
// OUTBOX_TEST_KAFKA_BROKERS, when set, wins over both.
const EnvKafka = "OUTBOX_TEST_KAFKA"

// EnvTransactionVersion sets the transaction.version (1, or 2 for KIP-890, the
// default) of the brokers kafkatest starts.
const EnvTransactionVersion = apachekafka.EnvTransactionVersion

// ApacheConfig says what Apache Kafka cluster to start.
type ApacheConfig = apachekafka.Config

// Apache is a running Apache Kafka cluster on loopback (Kill, StopNode and
// StartNode bounce its nodes).
type Apache = apachekafka.Cluster

// StartApacheT starts a cluster for one test and stops it when the test ends.
// It fails the test with the script's message (what to install) when Java or
// Maven is missing; it never skips.
func StartApacheT(t testing.TB, cfg ApacheConfig) *Apache {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := apachekafka.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("kafkatest: this test needs Apache Kafka: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("kafkatest: stop Apache Kafka: %v", err)
		}
	})
	return a
}

var (
	sharedOnce sync.Once
	shared     *Apache
	sharedErr  error
)

// sharedApache is the one broker of this test binary (OUTBOX_TEST_KAFKA=apache).
func sharedApache() (*Apache, error) {
	sharedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		shared, sharedErr = apachekafka.Start(ctx, ApacheConfig{})
	})
	return shared, sharedErr
}

// StopShared stops the test binary's shared broker, if one was started, and
// removes its folder. Call it from TestMain after the tests ran.
func StopShared() {
	if shared != nil {
		_ = shared.Stop()
		_ = os.RemoveAll(shared.Dir)
	}
}

// Main runs the tests, then stops the shared broker: for a TestMain that has
// nothing else to do, os.Exit(kafkatest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	StopShared()
	return code
}

// Runner is what goleak.VerifyTestMain and pgtest.Main need of a *testing.M.
type Runner interface{ Run() int }

type stopping struct{ m Runner }

func (s stopping) Run() int {
	code := s.m.Run()
	StopShared()
	return code
}

// M wraps m so that its Run stops the shared broker after the tests:
// goleak.VerifyTestMain(kafkatest.M(m)).
func M(m Runner) Runner { return stopping{m} }
