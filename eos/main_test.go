package eos

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// envChild holds a childConfig as JSON when the test binary is re-executed as
// a stage process by the crash tests.
const envChild = "OUTBOX_EOS_CHILD"

// envChildDebug=1 makes stage processes log at debug level, franz-go too.
const envChildDebug = "OUTBOX_EOS_CHILD_DEBUG"

// envSoak switches the crash tests to Kafka's full scale.
const envSoak = "OUTBOX_SOAK"

func TestMain(m *testing.M) {
	if c := os.Getenv(envChild); c != "" {
		os.Exit(childMain(c))
	}
	goleak.VerifyTestMain(kafkatest.M(m))
}

// childConfig is what a stage process runs.
type childConfig struct {
	Brokers        []string
	Group          string
	Input, Output  string
	DLQ            string
	TxnID          string
	MaxPerTxn      int
	RecordDelay    time.Duration
	SessionTimeout time.Duration
}

// childMain runs one stage process until SIGTERM (a clean stop) or SIGKILL.
func childMain(raw string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child: bad config:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	level := slog.LevelWarn
	if os.Getenv(envChildDebug) == "1" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	s, err := New(Config{
		Name:               c.TxnID,
		KafkaOpts:          []kgo.Opt{kgo.SeedBrokers(c.Brokers...)},
		Group:              c.Group,
		InputTopics:        []string{c.Input},
		OutputTopic:        c.Output,
		DeadLetterTopic:    c.DLQ,
		TransactionalID:    c.TxnID,
		Transform:          slowMark(c.RecordDelay),
		MaxRecordsPerTxn:   c.MaxPerTxn,
		SessionTimeout:     c.SessionTimeout,
		TransactionTimeout: c.SessionTimeout - time.Second,
		RebalanceTimeout:   2 * c.SessionTimeout,
		RestartBackoff:     200 * time.Millisecond,
		Logger:             log,
		KafkaLogLevel:      &level,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// Test records: value "rec-<n>" (padded to a size), key "key-<n % keys>". The
// test transform maps one to one, value "out:" + input value, and records the
// input's coordinates in header "src".
const hdrSrc = "src"

func mark(_ context.Context, r *kgo.Record) ([]*kgo.Record, error) {
	return []*kgo.Record{{
		Key:     r.Key,
		Value:   append([]byte("out:"), r.Value...),
		Headers: append(append([]kgo.RecordHeader{}, r.Headers...), kgo.RecordHeader{Key: hdrSrc, Value: []byte(src(r))}),
	}}, nil
}

func slowMark(d time.Duration) TransformFunc {
	if d <= 0 {
		return mark
	}
	return func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
		time.Sleep(d)
		return mark(ctx, r)
	}
}

func src(r *kgo.Record) string { return fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset) }

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func recordValue(n, size int) []byte {
	v := []byte(fmt.Sprintf("rec-%07d", n))
	if len(v) < size {
		v = append(v, []byte(strings.Repeat(".", size-len(v)))...)
	}
	return v
}

// recordIndex reads n back from a value made by recordValue, after any "out:" prefixes.
func recordIndex(t testing.TB, v []byte) int {
	s := string(v)
	for strings.HasPrefix(s, "out:") {
		s = s[len("out:"):]
	}
	s = strings.TrimPrefix(s, "rec-")
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s = s[:i]
	}
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "value %q", v)
	return n
}

// produceInput writes records from..from+n-1 of about size bytes to topic,
// keys spread over keys distinct values.
func produceInput(t testing.TB, k *kafkatest.Kafka, topic string, from, n, keys, size int) {
	t.Helper()
	require.NoError(t, produceRecords(k, topic, from, n, keys, size))
}

// produceRecords is produceInput for goroutines other than the test's.
func produceRecords(k *kafkatest.Kafka, topic string, from, n, keys, size int) error {
	cl, err := kgo.NewClient(append(k.Opts(), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	batch := make([]*kgo.Record, 0, 1000)
	for i := from; i < from+n; i++ {
		batch = append(batch, &kgo.Record{Key: []byte(fmt.Sprintf("key-%d", i%keys)), Value: recordValue(i, size)})
		if len(batch) == cap(batch) || i == from+n-1 {
			if err := cl.ProduceSync(ctx, batch...).FirstErr(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// committedTotal sums the group's committed offsets on topic.
func committedTotal(ctx context.Context, adm *kadm.Client, group, topic string) (int64, error) {
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return 0, err
	}
	var total int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At > 0 {
			total += o.At
		}
	})
	return total, nil
}

// waitCommitted waits until the group committed want input records of topic.
func waitCommitted(t testing.TB, k *kafkatest.Kafka, group, topic string, want int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got int64
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := committedTotal(ctx, k.Admin(), group, topic)
		cancel()
		if err == nil {
			got = n
			if got >= want {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("group %s committed %d of %d records of %s within %v", group, got, want, topic, timeout)
}

// verifyMapped checks that out (read_committed) is exactly the input 0..n-1
// mapped by mark: no duplicate, nothing lost, nothing extra, and per-key order
// kept. It returns the input indexes in output order.
func verifyMapped(t testing.TB, out []*kgo.Record, n int, prefix string) []int {
	t.Helper()
	seen := make(map[int]int, n)
	lastByKey := map[string]int{}
	order := make([]int, 0, len(out))
	dups := 0
	for _, r := range out {
		require.True(t, strings.HasPrefix(string(r.Value), prefix), "output value %q lacks %q", r.Value, prefix)
		i := recordIndex(t, r.Value)
		require.Less(t, i, n, "output %q has no input", r.Value)
		if seen[i]++; seen[i] > 1 {
			dups++
		}
		if last, ok := lastByKey[string(r.Key)]; ok {
			require.Greater(t, i, last, "key %s out of order: %d after %d", r.Key, i, last)
		}
		lastByKey[string(r.Key)] = i
		order = append(order, i)
	}
	lost := 0
	for i := range n {
		if seen[i] == 0 {
			lost++
		}
	}
	require.Zero(t, dups, "duplicates in read_committed output")
	require.Zero(t, lost, "inputs missing from read_committed output")
	require.Len(t, out, n)
	return order
}
