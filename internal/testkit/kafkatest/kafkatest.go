// Package kafkatest gives tests a Kafka cluster. New picks, in this order:
// existing brokers from OUTBOX_TEST_KAFKA_BROKERS; with OUTBOX_TEST_KAFKA=apache,
// one real Apache Kafka broker per test binary, started from Maven Central jars
// by scripts/kafka.sh (stop it with StopShared or Main in TestMain); else an
// in-process kfake cluster per test, for fast unit tests. StartApacheT gives a
// test a cluster of its own (three nodes, a transaction version, SASL_SSL) for
// broker bounces. Topics are created explicitly with kadm under random names,
// as production does, never by auto-creation (the Apache brokers refuse it).
//
// kfake is lenient where real transactions fail (synchronous EndTxn, stale
// epochs accepted, no replication): an exactly-once result on kfake alone is
// not a result, which is why the test command runs those suites on Apache Kafka.
package kafkatest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/demo/embedkafka"
	"github.com/outboxrelay/outbox/internal/ops/kafkaread"
)

// EnvBrokers names the environment variable with real seed brokers.
const EnvBrokers = "OUTBOX_TEST_KAFKA_BROKERS"

// Kafka is a cluster for one test.
type Kafka struct {
	// Brokers are the seed addresses.
	Brokers []string
	// Embedded is the in-process cluster, nil on real brokers.
	Embedded *embedkafka.Cluster
	// Apache is the binary's shared Apache Kafka broker (OUTBOX_TEST_KAFKA=apache), else nil.
	Apache *Apache
	admin  *kadm.Client
	t      testing.TB
}

// New returns a cluster for t, closed when t ends.
func New(t testing.TB) *Kafka {
	t.Helper()
	k := &Kafka{t: t}
	switch env := os.Getenv(EnvBrokers); {
	case env != "":
		k.Brokers = strings.Split(env, ",")
	case os.Getenv(EnvKafka) == "apache":
		a, err := sharedApache()
		if err != nil {
			t.Fatalf("kafkatest: %s=apache: %v", EnvKafka, err)
		}
		k.Apache = a
		k.Brokers = a.Plaintext
	case os.Getenv(EnvKafka) == "" || os.Getenv(EnvKafka) == "kfake":
		c, err := embedkafka.Start(embedkafka.Config{})
		if err != nil {
			t.Fatalf("kafkatest: %v", err)
		}
		k.Embedded = c
		k.Brokers = c.Brokers()
		t.Cleanup(c.Close)
	default:
		t.Fatalf("kafkatest: %s=%q: use apache or kfake", EnvKafka, os.Getenv(EnvKafka))
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...))
	if err != nil {
		t.Fatalf("kafkatest: admin client: %v", err)
	}
	k.admin = kadm.NewClient(cl)
	t.Cleanup(cl.Close)
	return k
}

// Real reports whether the tests run against real brokers.
func (k *Kafka) Real() bool { return k.Embedded == nil }

// Opts are the client options to reach the cluster.
func (k *Kafka) Opts() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(k.Brokers...)} }

// Admin is a kadm client on the cluster.
func (k *Kafka) Admin() *kadm.Client { return k.admin }

// Topic creates a topic with a random name that starts with prefix and returns
// the name. configs are topic configs such as cleanup.policy=compact.
func (k *Kafka) Topic(prefix string, partitions int32, configs map[string]string) string {
	k.t.Helper()
	name := fmt.Sprintf("%s-%d-%08x", prefix, time.Now().UnixNano()%1e6, rand.Uint32())
	k.CreateTopic(name, partitions, configs)
	return name
}

// CreateTopic creates the named topic, failing the test on error.
func (k *Kafka) CreateTopic(name string, partitions int32, configs map[string]string) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := make(map[string]*string, len(configs))
	for key, v := range configs {
		cfg[key] = &v
	}
	resp, err := k.admin.CreateTopic(ctx, partitions, -1, cfg, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		k.t.Fatalf("kafkatest: create topic %s: %v", name, err)
	}
}

// ReadCommitted reads every committed record of topics from the start, as a
// read_committed consumer sees them (see kafkaread.ReadCommitted).
func (k *Kafka) ReadCommitted(ctx context.Context, topics ...string) ([]*kgo.Record, error) {
	return kafkaread.ReadCommitted(ctx, k.Opts(), topics...)
}

// ReadUncommitted reads every data record of topics, aborted ones included
// (see kafkaread.ReadUncommitted).
func (k *Kafka) ReadUncommitted(ctx context.Context, topics ...string) ([]*kgo.Record, error) {
	return kafkaread.ReadUncommitted(ctx, k.Opts(), topics...)
}
