// Package embedkafka starts franz-go's kfake cluster in-process: the embedded
// Kafka behind `--embedded-kafka`, `outbox demo` and the tests (the Go analogue
// of Spring's EmbeddedKafka). Only cmd/outbox and test code import it; the stage
// packages never do, and everything that runs on it also runs on real brokers.
//
// kfake is faithful on transactions, read_committed, fencing, KIP-447 offsets and
// consumer groups, but it ends transactions synchronously, ignores the last
// stable offset when compacting and accepts a stale-epoch InitProducerID: never
// rely on those.
package embedkafka

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config says how to start the embedded cluster.
type Config struct {
	// Brokers is the number of in-process brokers. Defaults to 1.
	Brokers int
	// DataDir keeps topics and offsets across restarts. Defaults to memory only.
	DataDir string
	// Ports to listen on, one per broker. Defaults to free ports.
	Ports []int
}

// Cluster is a running embedded Kafka.
type Cluster struct{ fake *kfake.Cluster }

// Start starts an embedded cluster listening on 127.0.0.1.
func Start(cfg Config) (*Cluster, error) {
	n := cfg.Brokers
	if n <= 0 {
		n = 1
	}
	opts := []kfake.Opt{kfake.NumBrokers(n), kfake.DefaultNumPartitions(1)}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if len(cfg.Ports) > 0 {
		opts = append(opts, kfake.Ports(cfg.Ports...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedkafka: start: %w", err)
	}
	return &Cluster{fake: c}, nil
}

// Brokers returns the seed addresses.
func (c *Cluster) Brokers() []string { return c.fake.ListenAddrs() }

// Fake exposes the kfake cluster for tests that inject failures with Control.
func (c *Cluster) Fake() *kfake.Cluster { return c.fake }

// Close stops the cluster.
func (c *Cluster) Close() { c.fake.Close() }
