package topicspec_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/kafkatest"
	"github.com/outboxrelay/outbox/internal/topicspec"
)

type testBundle struct {
	k      *kafkatest.Kafka
	cl     *kgo.Client
	prefix string
}

func setup(t *testing.T) (*testBundle, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	k := kafkatest.New(t)
	cl, err := kgo.NewClient(k.Opts()...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &testBundle{k: k, cl: cl, prefix: fmt.Sprintf("ts%08x", rand.Uint32())}, ctx
}

func (b *testBundle) file(t *testing.T, eventsRetention string, partitions int) topicspec.File {
	t.Helper()
	doc := fmt.Sprintf(`
defaults:
  partitions: 2
  retention: 7d
topics:
  - {name: %[1]s.order, kind: event, partitions: %[3]d, retention: %[2]s}
  - {name: %[1]s.customer, kind: record}
  - {name: %[1]s.checkpoint, kind: checkpoint}
  - {name: %[1]s.dlq, kind: dead_letter, retention: 30d}
  - {name: %[1]s.dlq.replayed, kind: replay_ledger}
`, b.prefix, eventsRetention, partitions)
	f, err := topicspec.Parse(strings.NewReader(doc))
	require.NoError(t, err)
	return f
}

// freshAdmin is an admin client with an empty metadata cache.
func (b *testBundle) freshAdmin(t *testing.T) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(b.k.Opts()...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func plan(ctx context.Context, t *testing.T, b *testBundle, f topicspec.File) topicspec.Plan {
	t.Helper()
	specs, err := f.Specs()
	require.NoError(t, err)
	p, err := topicspec.MakePlan(ctx, b.cl, specs)
	require.NoError(t, err)
	return p
}

func TestApplyCreatesThenNoOp(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	f := b.file(t, "7d", 3)

	p := plan(ctx, t, b, f)
	require.Equal(t, 5, p.Pending())
	var out bytes.Buffer
	require.NoError(t, p.Write(&out))
	require.Contains(t, out.String(), "+ "+b.prefix+".order: create (event) partitions=3")
	require.Contains(t, out.String(), "cleanup.policy=delete retention.ms=604800000")
	require.NoError(t, topicspec.Apply(ctx, b.cl, p))

	details, err := b.freshAdmin(t).ListTopics(ctx, b.prefix+".order", b.prefix+".checkpoint")
	require.NoError(t, err)
	require.Len(t, details[b.prefix+".order"].Partitions, 3)
	require.Len(t, details[b.prefix+".checkpoint"].Partitions, 1)
	rcs, err := b.k.Admin().DescribeTopicConfigs(ctx, b.prefix+".checkpoint", b.prefix+".dlq")
	require.NoError(t, err)
	rc, err := rcs.On(b.prefix+".checkpoint", nil)
	require.NoError(t, err)
	requireConfig(t, rc, "cleanup.policy", "compact")
	rc, err = rcs.On(b.prefix+".dlq", nil)
	require.NoError(t, err)
	requireConfig(t, rc, "retention.ms", "2592000000")

	again := plan(ctx, t, b, f)
	require.Zero(t, again.Pending(), "second run must be a no-op: %v", again.Changes)
	require.Equal(t, 5, again.UpToDate)
}

func TestApplyConfigAndPartitionChange(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	p := plan(ctx, t, b, b.file(t, "7d", 2))
	require.NoError(t, topicspec.Apply(ctx, b.cl, p))

	changed := b.file(t, "36h", 4)
	p = plan(ctx, t, b, changed)
	require.Len(t, p.Changes, 2, "%v", p.Changes)
	require.Equal(t, topicspec.ActionAddPartitions, p.Changes[0].Action)
	require.Equal(t, topicspec.ActionSetConfig, p.Changes[1].Action)
	require.Equal(t, "retention.ms", p.Changes[1].Key)
	require.Equal(t, "604800000", p.Changes[1].From)
	require.Equal(t, "129600000", p.Changes[1].To)
	require.NoError(t, topicspec.Apply(ctx, b.cl, p))

	require.Zero(t, plan(ctx, t, b, changed).Pending())
	details, err := b.freshAdmin(t).ListTopics(ctx, b.prefix+".order")
	require.NoError(t, err)
	require.Len(t, details[b.prefix+".order"].Partitions, 4)

	// Fewer partitions than the cluster has is reported, never applied.
	p = plan(ctx, t, b, b.file(t, "36h", 1))
	require.Len(t, p.Changes, 1)
	require.Equal(t, topicspec.ActionManual, p.Changes[0].Action)
	require.Zero(t, p.Pending())
}

func requireConfig(t *testing.T, rc kadm.ResourceConfig, key, want string) {
	t.Helper()
	for _, c := range rc.Configs {
		if c.Key == key {
			require.Equal(t, want, c.MaybeValue(), "%s of %s", key, rc.Name)
			return
		}
	}
	t.Fatalf("%s has no config %s", rc.Name, key)
}

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }
