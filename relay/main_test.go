package relay_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/relay"
)

// Environment of a child relay process: the crash tests re-exec the test
// binary with envChild set, and TestMain runs a relay instead of the tests.
const (
	envChild        = "RELAY_TEST_CHILD"
	envChildConfig  = "RELAY_TEST_CONFIG" // key=value;key=value
	envCrashCommits = "RELAY_TEST_CRASH_AFTER_COMMITS"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(childMain())
	}
	code := pgtest.Main(kafkatest.M(m))
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// childConfig encodes the settings a child relay needs.
type childConfig struct {
	URL, Brokers, Schema, Slot, Checkpoint, Topic, RecordTopic string
	MaxBatch, SplitEvents                                      int
	Heartbeat                                                  time.Duration
	NoStandby                                                  bool
	// Linger lets a batch wait for more transactions (the bounce tests use
	// it to get Kafka transactions of hundreds of events at a modest rate).
	Linger time.Duration
	// OnSlotLoss and Since are relay.Config's.
	OnSlotLoss string
	Since      time.Time
	// Republish makes the child run relay.Republish from Since instead of a
	// relay (the crash tests of the repair kill it mid-run).
	Republish bool
}

func (c childConfig) encode() string {
	return strings.Join([]string{
		"url=" + c.URL, "brokers=" + c.Brokers, "schema=" + c.Schema, "slot=" + c.Slot, "checkpoint=" + c.Checkpoint,
		"topic=" + c.Topic, "record_topic=" + c.RecordTopic, "max_batch=" + strconv.Itoa(c.MaxBatch),
		"split=" + strconv.Itoa(c.SplitEvents), "heartbeat=" + c.Heartbeat.String(), "no_standby=" + strconv.FormatBool(c.NoStandby),
		"linger=" + c.Linger.String(), "on_slot_loss=" + c.OnSlotLoss, "since=" + strconv.FormatInt(c.Since.UnixNano(), 10),
		"republish=" + strconv.FormatBool(c.Republish),
	}, ";")
}

func decodeChildConfig(s string) childConfig {
	kv := map[string]string{}
	for _, p := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(p, "=")
		kv[k] = v
	}
	c := childConfig{URL: kv["url"], Brokers: kv["brokers"], Schema: kv["schema"], Slot: kv["slot"], Checkpoint: kv["checkpoint"],
		Topic: kv["topic"], RecordTopic: kv["record_topic"]}
	c.MaxBatch, _ = strconv.Atoi(kv["max_batch"])
	c.SplitEvents, _ = strconv.Atoi(kv["split"])
	c.Heartbeat, _ = time.ParseDuration(kv["heartbeat"])
	c.NoStandby, _ = strconv.ParseBool(kv["no_standby"])
	c.Linger, _ = time.ParseDuration(kv["linger"])
	c.OnSlotLoss = kv["on_slot_loss"]
	if ns, _ := strconv.ParseInt(kv["since"], 10, 64); ns > 0 {
		c.Since = time.Unix(0, ns)
	}
	c.Republish, _ = strconv.ParseBool(kv["republish"])
	return c
}

func (c childConfig) relayConfig(logger *slog.Logger) relay.Config {
	return relay.Config{
		DatabaseURL:         c.URL,
		Schema:              c.Schema,
		Slot:                c.Slot,
		KafkaOpts:           []kgo.Opt{kgo.SeedBrokers(strings.Split(c.Brokers, ",")...)},
		CheckpointTopic:     c.Checkpoint,
		TopicTemplate:       c.Topic,
		RecordTopicTemplate: c.RecordTopic,
		MaxBatchEvents:      c.MaxBatch,
		SplitEvents:         c.SplitEvents,
		HeartbeatInterval:   c.Heartbeat,
		NoStandby:           c.NoStandby,
		Linger:              c.Linger,
		OnSlotLoss:          c.OnSlotLoss,
		Since:               c.Since,
		StandbyPollInterval: 100 * time.Millisecond,
		RetryBackoff:        100 * time.Millisecond,
		TransactionTimeout:  20 * time.Second,
		Logger:              logger,
	}
}

// childMain runs one relay until SIGTERM, SIGKILL or the crash hook.
func childMain() int {
	level := slog.LevelInfo
	if os.Getenv("RELAY_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cc := decodeChildConfig(os.Getenv(envChildConfig))
	if cc.Republish {
		return republishChild(cc, logger)
	}
	cfg := cc.relayConfig(logger)
	if n, _ := strconv.Atoi(os.Getenv(envCrashCommits)); n > 0 {
		relay.SetAfterRepairCommit(&cfg, func(k int) {
			if k == n {
				logger.Info("child: exiting after a repair's Kafka commit", "commits", k)
				os.Exit(3)
			}
		})
		commits := 0
		relay.SetAfterKafkaCommit(&cfg, func() {
			commits++
			if commits == n {
				logger.Info("child: exiting between Kafka commit and LSN confirm", "commits", commits)
				os.Exit(3)
			}
		})
	}
	r, err := relay.New(cfg)
	if err != nil {
		logger.Error("child: new", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = r.Run(ctx)
	switch {
	case errors.Is(err, context.Canceled):
		return 0
	case errors.Is(err, relay.ErrSlotInUse):
		logger.Error("child: run", "error", err)
		return 4
	default:
		logger.Error("child: run", "error", err)
		return 1
	}
}

// republishConfig is the relay.RepublishConfig matching a child's relay settings.
func (c childConfig) republishConfig(logger *slog.Logger) relay.RepublishConfig {
	return relay.RepublishConfig{
		DatabaseURL:         c.URL,
		Schema:              c.Schema,
		Slot:                c.Slot,
		Since:               c.Since,
		KafkaOpts:           []kgo.Opt{kgo.SeedBrokers(strings.Split(c.Brokers, ",")...)},
		CheckpointTopic:     c.Checkpoint,
		TopicTemplate:       c.Topic,
		RecordTopicTemplate: c.RecordTopic,
		BatchEvents:         c.MaxBatch,
		TransactionTimeout:  20 * time.Second,
		Logger:              logger,
	}
}

// republishChild runs one Republish; with envCrashCommits it exits after
// that many of its Kafka transactions committed.
func republishChild(cc childConfig, logger *slog.Logger) int {
	cfg := cc.republishConfig(logger)
	if n, _ := strconv.Atoi(os.Getenv(envCrashCommits)); n > 0 {
		relay.SetAfterRepublishCommit(&cfg, func(k int) {
			if k == n {
				logger.Info("child: exiting after a republish commit", "commits", k)
				os.Exit(3)
			}
		})
	}
	sum, err := relay.Republish(context.Background(), cfg)
	if err != nil {
		logger.Error("child: republish", "error", err)
		return 1
	}
	logger.Info("child: republished", "rows", sum.Rows, "in_kafka", sum.InKafka, "published", sum.Published)
	return 0
}
