package demo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/demo/apachekafka"
	"github.com/outboxrelay/outbox/internal/demo/embedkafka"
	"github.com/outboxrelay/outbox/internal/ops/topicspec"
)

// topics are the topics the demo's stages use, created before they start.
var topics = []topicspec.Spec{
	{Name: EventsTopic, Kind: topicspec.KindEvent, Partitions: 3, ReplicationFactor: -1},
	{Name: "outbox.relay.checkpoints", Kind: topicspec.KindCheckpoint, Partitions: 1, ReplicationFactor: -1,
		Configs: map[string]string{"cleanup.policy": "compact"}},
	{Name: PaymentTopic, Kind: topicspec.KindCommand, Partitions: 3, ReplicationFactor: -1},
	{Name: ShippingTopic, Kind: topicspec.KindCommand, Partitions: 3, ReplicationFactor: -1},
	{Name: TransformDLQ, Kind: topicspec.KindDeadLetter, Partitions: 1, ReplicationFactor: -1},
	// What a replay of the sinks' dead letters (the console's, or `outbox
	// dlq replay`) writes: its ledger, and the quarantine past --max-replays.
	{Name: PaymentTopic + ".dlt.replayed", Kind: topicspec.KindReplayLedger, Partitions: 1, ReplicationFactor: -1,
		Configs: map[string]string{"cleanup.policy": "compact"}},
	{Name: PaymentTopic + ".dlt.quarantine", Kind: topicspec.KindQuarantine, Partitions: 1, ReplicationFactor: -1},
	{Name: ShippingTopic + ".dlt.replayed", Kind: topicspec.KindReplayLedger, Partitions: 1, ReplicationFactor: -1,
		Configs: map[string]string{"cleanup.policy": "compact"}},
	{Name: ShippingTopic + ".dlt.quarantine", Kind: topicspec.KindQuarantine, Partitions: 1, ReplicationFactor: -1},
}

// startKafka points r.cfg.Kafka at the brokers of the run, starting kfake or
// Apache Kafka when none are given, and creates the demo's topics.
func (r *runner) startKafka(ctx context.Context) error {
	switch {
	case len(r.cfg.Kafka.Brokers) > 0:
		r.say("kafka: %s", strings.Join(r.cfg.Kafka.Brokers, ","))
	case r.cfg.KafkaKind == KafkaApache:
		if err := r.startApache(ctx); err != nil {
			return err
		}
	default:
		k, err := embedkafka.Start(embedkafka.Config{})
		if err != nil {
			return err
		}
		r.onClose(k.Close)
		r.cfg.Kafka.Brokers = k.Brokers()
		r.say("kafka: embedded kfake at %s", strings.Join(r.cfg.Kafka.Brokers, ","))
	}
	kopts, err := r.cfg.Kafka.Opts()
	if err != nil {
		return err
	}
	r.kopts = kopts
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return fmt.Errorf("demo: kafka client: %w", err)
	}
	defer cl.Close()
	plan, err := topicspec.MakePlan(ctx, cl, topics)
	if err != nil {
		return err
	}
	return topicspec.Apply(ctx, cl, plan)
}

// startApache starts a one-node Apache Kafka for the demo in a new folder
// under the log dir and points r.cfg.Kafka at it; it is stopped when the run
// ends, and its folder removed unless the logs are the user's (LogDir) or
// KeepLogs. On one node every topic gets replication factor 1 (the broker's
// default.replication.factor); the broker does not auto-create topics, so the
// demo and its stages create each one explicitly.
func (r *runner) startApache(ctx context.Context) error {
	keep := r.cfg.LogDir != "" || r.cfg.KeepLogs
	dir, err := os.MkdirTemp(r.logDir, "kafka-")
	if err != nil {
		return err
	}
	r.say("kafka: starting Apache Kafka (one node) in %s", dir)
	began := time.Now()
	// The JVM's start is bounded; a cancelled demo stops waiting at once.
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	k, err := apachekafka.Start(startCtx, apachekafka.Config{Dir: dir})
	if err != nil {
		// A start that failed or was cancelled half way may leave a JVM that
		// no watcher stops yet: stop whatever the folder holds.
		if script, serr := apachekafka.Script(); serr == nil {
			_ = exec.Command("bash", script, "stop", dir).Run()
		}
		if !keep {
			_ = os.RemoveAll(dir)
		}
		return err
	}
	r.cfg.Kafka.Brokers = k.Plaintext
	r.say("kafka: Apache Kafka at %s (transaction.version %d), up in %s", strings.Join(k.Plaintext, ","), k.TransactionVersion, time.Since(began).Round(100*time.Millisecond))
	r.onClose(func() {
		if err := k.Stop(); err != nil {
			r.say("kafka: stop Apache Kafka: %v (its folder %s is kept)", err, dir)
			return
		}
		if keep {
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			r.say("kafka: remove %s: %v", dir, err)
		}
	})
	return nil
}
