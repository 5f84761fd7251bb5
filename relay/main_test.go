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
}

func (c childConfig) encode() string {
	return strings.Join([]string{
		"url=" + c.URL, "brokers=" + c.Brokers, "schema=" + c.Schema, "slot=" + c.Slot, "checkpoint=" + c.Checkpoint,
		"topic=" + c.Topic, "record_topic=" + c.RecordTopic, "max_batch=" + strconv.Itoa(c.MaxBatch),
		"split=" + strconv.Itoa(c.SplitEvents), "heartbeat=" + c.Heartbeat.String(), "no_standby=" + strconv.FormatBool(c.NoStandby),
		"linger=" + c.Linger.String(),
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
	cfg := decodeChildConfig(os.Getenv(envChildConfig)).relayConfig(logger)
	if n, _ := strconv.Atoi(os.Getenv(envCrashCommits)); n > 0 {
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
