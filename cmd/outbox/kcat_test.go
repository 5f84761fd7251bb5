package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/demo/apachekafka"
)

// kcatRecord is one record as kcat printed it.
type kcatRecord struct {
	key     string
	headers map[string]string
}

// runKcat consumes topic from the start to its end with kcat (librdkafka: a
// client that shares no code with franz-go) at the given isolation level.
//
// kcat reads from the cluster's plaintext listener, not the SASL_SSL one the
// relay writes to: Debian's kcat links librdkafka 2.0.2, whose SCRAM
// client-final-message repeats the client nonce, and Kafka 4.x brokers reject
// that as invalid credentials (fixed in librdkafka 2.6.1,
// confluentinc/librdkafka#4895; edenhill/kcat#462). Both listeners serve the
// same partitions, so what kcat counts is what the relay committed.
func runKcat(t *testing.T, k *apachekafka.Cluster, topic, isolation string) []kcatRecord {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is not installed (apt-get install -y kcat): this test needs it as a second, independent Kafka client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// \x1f separates key from headers: headers print as "k=v,k=v".
	cmd := exec.CommandContext(ctx, kcat, "-C", "-q", "-e", "-o", "beginning",
		"-b", strings.Join(k.Plaintext, ","), "-t", topic,
		"-X", "isolation.level="+isolation,
		"-f", "%k\x1f%h\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\nstderr:\n%s", isolation, err, stderr.String())
	}
	var out []kcatRecord
	for _, line := range strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		key, hs, ok := strings.Cut(line, "\x1f")
		require.True(t, ok, "kcat line %q", line)
		r := kcatRecord{key: key, headers: map[string]string{}}
		for _, kv := range strings.Split(hs, ",") {
			name, value, ok := strings.Cut(kv, "=")
			require.True(t, ok, "kcat header %q in %q", kv, line)
			r.headers[name] = value
		}
		out = append(out, r)
	}
	return out
}

// TestKcatReadsRelayOutputReadCommitted has kcat read what the real relay
// binary published over SASL_SSL, read_committed, next to an aborted
// transaction in the same topic: kcat must count exactly the committed events
// and see the same envelope headers as franz-go's read_committed consumer and
// as the outbox rows hold. Read uncommitted, kcat sees the aborted records
// too, which shows the isolation level is what hides them.
func TestKcatReadsRelayOutputReadCommitted(t *testing.T) {
	t.Parallel()
	k := secureKafka(t)
	b := startSecureRelay(t, k)
	topic := fmt.Sprintf("kcat.orders.%d", os.Getpid())

	opts, err := k.SecureOpts()
	require.NoError(t, err)
	admin, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err = kadm.NewClient(admin).CreateTopic(ctx, 3, 1, nil, topic)
	require.NoError(t, err, "create %s", topic)

	// An aborted Kafka transaction in the topic: records a read_committed
	// reader must never see.
	aborter, err := kgo.NewClient(append(opts, kgo.TransactionalID(topic+".aborter"), kgo.DefaultProduceTopic(topic))...)
	require.NoError(t, err)
	defer aborter.Close()
	require.NoError(t, aborter.BeginTransaction())
	for i := range 2 {
		r := &kgo.Record{Key: []byte("aborted"), Value: []byte("{}"),
			Headers: []kgo.RecordHeader{{Key: envelope.HeaderEventID, Value: fmt.Appendf(nil, "aborted-%d", i)}}}
		require.NoError(t, aborter.ProduceSync(ctx, r).FirstErr())
	}
	require.NoError(t, aborter.EndTransaction(ctx, kgo.TryAbort))

	written := map[string]string{} // event id -> aggregate id
	for tx, n := range []int{4, 3} {
		ids := b.writeOrdersTo(t, topic, n, fmt.Sprintf("kcat-%d", tx))
		for i, id := range ids {
			written[id] = fmt.Sprintf("o-kcat-%d-%d", tx, i)
		}
	}

	var franz []*kgo.Record
	eventually(t, time.Minute, "relay publishes 7 events", func() error {
		franz = readCommitted(t, k, topic)
		if len(franz) != len(written) {
			return fmt.Errorf("%d records", len(franz))
		}
		return nil
	})

	got := runKcat(t, k, topic, "read_committed")
	require.Len(t, got, len(written), "kcat read_committed counts the committed events only")
	byID := map[string]kcatRecord{}
	for _, r := range got {
		id := r.headers[envelope.HeaderEventID]
		_, dup := byID[id]
		require.False(t, dup, "event %s twice", id)
		byID[id] = r
	}
	for _, fr := range franz {
		id := header(fr, envelope.HeaderEventID)
		kr, ok := byID[id]
		require.True(t, ok, "kcat lacks event %s", id)
		want := map[string]string{}
		for _, h := range fr.Headers {
			want[h.Key] = string(h.Value)
		}
		require.Equal(t, want, kr.headers, "headers of event %s: franz-go vs kcat", id)
		require.Equal(t, string(fr.Key), kr.key, "key of event %s", id)
		require.Equal(t, written[id], kr.key, "the key is the aggregate id")
		require.Equal(t, "order.created", kr.headers[envelope.HeaderEventType])
		require.Equal(t, "order", kr.headers[envelope.HeaderAggregateType])
		require.Equal(t, written[id], kr.headers[envelope.HeaderAggregateID])
		require.Equal(t, envelope.KindEvent, kr.headers[envelope.HeaderKind])
		require.Equal(t, envelope.ContentTypeJSON, kr.headers[envelope.HeaderContentType])
		require.True(t, strings.HasPrefix(kr.headers[envelope.HeaderCorrelationID], "kcat-"), "correlation id %q", kr.headers[envelope.HeaderCorrelationID])
		require.NotEmpty(t, kr.headers[envelope.HeaderSourceLSN])
		_, err := time.Parse(time.RFC3339Nano, kr.headers[envelope.HeaderOccurredAt])
		require.NoError(t, err, "occurred_at")
	}
	var ids []string
	for id := range byID {
		ids = append(ids, id)
	}
	var want []string
	for id := range written {
		want = append(want, id)
	}
	sort.Strings(ids)
	sort.Strings(want)
	require.Equal(t, want, ids, "kcat sees exactly the outbox's event ids")

	all := runKcat(t, k, topic, "read_uncommitted")
	require.Len(t, all, len(written)+2, "read_uncommitted also shows the aborted records")
}
