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

	"github.com/outboxrelay/outbox/internal/ops/topicspec"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
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

// parse parses a topics file with every %[1]s replaced by the test's prefix.
func (b *testBundle) parse(t *testing.T, doc string) []topicspec.Spec {
	t.Helper()
	f, err := topicspec.Parse(strings.NewReader(fmt.Sprintf(doc, b.prefix)))
	require.NoError(t, err)
	specs, err := f.Specs()
	require.NoError(t, err)
	return specs
}

// keyedRecord writes one record with a key to topic, so the topic holds an
// existing key.
func (b *testBundle) keyedRecord(ctx context.Context, t *testing.T, topic string) {
	t.Helper()
	require.NoError(t, b.cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("order-1"), Value: []byte("{}")}).FirstErr())
}

func (b *testBundle) partitions(ctx context.Context, t *testing.T, topic string) int {
	t.Helper()
	details, err := b.freshAdmin(t).ListTopics(ctx, topic)
	require.NoError(t, err)
	return len(details[topic].Partitions)
}

func (b *testBundle) config(ctx context.Context, t *testing.T, topic, key string) string {
	t.Helper()
	rcs, err := b.freshAdmin(t).DescribeTopicConfigs(ctx, topic)
	require.NoError(t, err)
	rc, err := rcs.On(topic, nil)
	require.NoError(t, err)
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue()
		}
	}
	return ""
}

func (b *testBundle) exists(ctx context.Context, t *testing.T, topic string) bool {
	t.Helper()
	details, err := b.freshAdmin(t).ListTopics(ctx, topic)
	require.NoError(t, err)
	d, ok := details[topic]
	return ok && d.Err == nil
}

// TestPlanRefusedAppliesNothing is issue 15's run: deploy/topics.yaml's
// replication factor 3 and min.insync.replicas 2 on a one-broker cluster,
// with a live one-partition event topic the file wants at 6. The old apply
// raised the partitions, then failed creating the next topic. The plan now
// names every problem and Apply changes nothing.
func TestPlanRefusedAppliesNothing(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	order := b.prefix + ".order"
	b.k.CreateTopic(order, 1, nil)
	b.keyedRecord(ctx, t, order)
	specs := b.parse(t, `
defaults: {partitions: 6, replication_factor: 3, configs: {min.insync.replicas: "2"}}
topics:
  - {name: %[1]s.order, kind: event}
  - {name: %[1]s.checkpoint, kind: checkpoint}
`)
	p, err := topicspec.MakePlan(ctx, b.cl, specs)
	require.NoError(t, err)
	require.Equal(t, 1, p.Brokers)

	var out bytes.Buffer
	require.NoError(t, p.Write(&out))
	text := out.String()
	t.Log(text)
	require.Contains(t, text, "~ "+order+": partitions 1 -> 6\n")
	require.Contains(t, text, "! "+order+": replication factor 1, file wants 3")
	require.Contains(t, text, "refused: "+order+": partitions 1 -> 6: more partitions for a keyed topic: records with an existing key will go to a different partition, so consumers lose per-key order across the change; to do it safely, stop the producers and let the consumers drain first, or create a new topic; --allow-repartition raises it anyway")
	require.Contains(t, text, "refused: "+order+": min.insync.replicas 1 -> 2: min.insync.replicas above the replication factor (the topic has 1 replica(s))")
	require.Contains(t, text, "refused: "+b.prefix+".checkpoint: create with replication factor 3: not enough live brokers (the cluster has 1, it needs 3); lower replication_factor in the file, or pass --replication-factor 1")
	require.Contains(t, text, "refused (3 problem(s)): nothing will be changed\n")

	err = topicspec.Apply(ctx, b.cl, p)
	require.ErrorIs(t, err, topicspec.ErrRefused)
	require.ErrorIs(t, err, topicspec.ErrRepartition)
	require.ErrorIs(t, err, topicspec.ErrMinInsyncReplicas)
	require.ErrorIs(t, err, topicspec.ErrNotEnoughBrokers)
	require.NotErrorIs(t, err, topicspec.ErrRejected)
	require.Equal(t, 1, b.partitions(ctx, t, order), "nothing applied: partitions")
	require.NotEqual(t, "2", b.config(ctx, t, order, "min.insync.replicas"), "nothing applied: configs")
	require.False(t, b.exists(ctx, t, b.prefix+".checkpoint"), "nothing applied: creates")

	// The single-broker override makes the same file safe, but for the
	// repartition, which it does not excuse.
	p, err = topicspec.MakePlan(ctx, b.cl, specs, topicspec.ReplicationFactor(1))
	require.NoError(t, err)
	require.Len(t, p.Problems, 1, "%v", p.Problems)
	require.ErrorIs(t, p.Err(), topicspec.ErrRepartition)
}

func TestPlanRepartitionKeyedTopic(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	doc := `
topics:
  - {name: %[1]s.order, kind: event, partitions: 3}
  - {name: %[1]s.records, kind: record, partitions: 2}
  - {name: %[1]s.fresh, kind: event, partitions: 4}
  - {name: %[1]s.dlq, kind: dead_letter, partitions: 2}
`
	specs := b.parse(t, doc)
	b.k.CreateTopic(b.prefix+".order", 1, nil)
	b.k.CreateTopic(b.prefix+".records", 1, map[string]string{"cleanup.policy": "compact"})
	b.k.CreateTopic(b.prefix+".fresh", 1, nil)
	b.k.CreateTopic(b.prefix+".dlq", 1, nil)
	for _, name := range []string{"order", "records", "dlq"} {
		b.keyedRecord(ctx, t, b.prefix+"."+name)
	}

	// Refused without the option: one problem per keyed topic with records.
	p, err := topicspec.MakePlan(ctx, b.cl, specs)
	require.NoError(t, err)
	var refused []string
	for _, pr := range p.Problems {
		require.ErrorIs(t, pr.Err, topicspec.ErrRepartition)
		require.False(t, pr.Warning)
		refused = append(refused, pr.Topic)
	}
	require.Equal(t, []string{b.prefix + ".order", b.prefix + ".records"}, refused,
		"the never-written topic and the dead-letter topic (unkeyed) may grow")
	require.Contains(t, p.Problems[1].Err.Error(), "compaction keeps the old record of each moved key in its old partition")
	require.ErrorIs(t, topicspec.Apply(ctx, b.cl, p), topicspec.ErrRefused)
	require.Equal(t, 1, b.partitions(ctx, t, b.prefix+".fresh"), "a refused plan applies nothing, not even the harmless raise")

	// The dry run with the option still prints why, as warnings.
	p, err = topicspec.MakePlan(ctx, b.cl, specs, topicspec.AllowRepartition(true))
	require.NoError(t, err)
	require.NoError(t, p.Err())
	var out bytes.Buffer
	require.NoError(t, p.Write(&out))
	text := out.String()
	t.Log(text)
	require.Contains(t, text, "warning: "+b.prefix+".order: partitions 1 -> 3: more partitions for a keyed topic: records with an existing key will go to a different partition, so consumers lose per-key order across the change; to do it safely, stop the producers and let the consumers drain first, or create a new topic\n")
	require.Contains(t, text, "warning: "+b.prefix+".records: partitions 1 -> 2:")
	require.Contains(t, text, "~ "+b.prefix+".fresh: partitions 1 -> 4 (the topic never held a record: no existing key moves)")
	require.NotContains(t, text, "warning: "+b.prefix+".dlq")
	require.NotContains(t, text, "--allow-repartition", "the option is given")
	require.Contains(t, text, "4 change(s), 0 topic(s) up to date\n")
	require.NoError(t, topicspec.Apply(ctx, b.cl, p))
	require.Equal(t, 3, b.partitions(ctx, t, b.prefix+".order"))
	require.Equal(t, 2, b.partitions(ctx, t, b.prefix+".records"))
	require.Equal(t, 4, b.partitions(ctx, t, b.prefix+".fresh"))
	require.Equal(t, 2, b.partitions(ctx, t, b.prefix+".dlq"))

	// keyed: false says no consumer needs per-key order.
	specs = b.parse(t, "topics: [{name: %[1]s.order, kind: event, partitions: 5, keyed: false}]")
	p, err = topicspec.MakePlan(ctx, b.cl, specs)
	require.NoError(t, err)
	require.Empty(t, p.Problems)
	require.NoError(t, topicspec.Apply(ctx, b.cl, p))
	require.Equal(t, 5, b.partitions(ctx, t, b.prefix+".order"))
}

func TestPlanReplicationFactorOverride(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	specs := b.parse(t, `
defaults: {partitions: 2, replication_factor: 3, configs: {min.insync.replicas: "2"}}
topics: [{name: %[1]s.order, kind: event}]
`)
	_, err := topicspec.MakePlan(ctx, b.cl, specs, topicspec.ReplicationFactor(-2))
	require.ErrorIs(t, err, topicspec.ErrInvalid)

	p, err := topicspec.MakePlan(ctx, b.cl, specs, topicspec.ReplicationFactor(1))
	require.NoError(t, err)
	require.Empty(t, p.Problems)
	require.Len(t, p.Changes, 1)
	require.Equal(t, int16(1), p.Changes[0].Spec.ReplicationFactor)
	require.Equal(t, "1", p.Changes[0].Spec.Configs["min.insync.replicas"], "lowered to the replication factor")
	require.Equal(t, "2", specs[0].Configs["min.insync.replicas"], "the caller's specs are not changed")
	require.NoError(t, topicspec.Apply(ctx, b.cl, p))
	require.Equal(t, "1", b.config(ctx, t, b.prefix+".order", "min.insync.replicas"))

	again, err := topicspec.MakePlan(ctx, b.cl, specs, topicspec.ReplicationFactor(1))
	require.NoError(t, err)
	require.Zero(t, again.Pending(), "%v", again.Changes)
}

// TestPlanMinInsyncOverBrokerDefault: with the brokers' replication factor
// (1 on one broker), min.insync.replicas 2 is found at plan time from the
// brokers' own answer to a validate-only create.
func TestPlanMinInsyncOverBrokerDefault(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	specs := b.parse(t, `topics: [{name: %[1]s.order, kind: event, configs: {min.insync.replicas: "2"}}]`)
	p, err := topicspec.MakePlan(ctx, b.cl, specs)
	require.NoError(t, err)
	require.Len(t, p.Problems, 1, "%v", p.Problems)
	require.ErrorIs(t, p.Problems[0].Err, topicspec.ErrMinInsyncReplicas)
	require.Contains(t, p.Problems[0].Err.Error(), "create with min.insync.replicas 2 and replication factor 1")
	require.ErrorIs(t, topicspec.Apply(ctx, b.cl, p), topicspec.ErrRefused)
	require.False(t, b.exists(ctx, t, b.prefix+".order"))
}

// TestPlanRejectedByBrokers: what the brokers refuse is found before
// anything changes, by asking them to validate every change.
func TestPlanRejectedByBrokers(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	b.k.CreateTopic(b.prefix+".a.b", 1, nil)
	// Kafka refuses a name that differs from an existing one only in '.' vs '_'.
	specs := b.parse(t, `
topics:
  - {name: %[1]s.first, kind: event}
  - {name: %[1]s.a_b, kind: event}
`)
	p, err := topicspec.MakePlan(ctx, b.cl, specs)
	require.NoError(t, err)
	require.Len(t, p.Problems, 1, "%v", p.Problems)
	require.Equal(t, b.prefix+".a_b", p.Problems[0].Topic)
	require.ErrorIs(t, p.Problems[0].Err, topicspec.ErrRejected)
	require.Contains(t, p.Problems[0].Err.Error(), "INVALID_TOPIC_EXCEPTION")
	require.ErrorIs(t, topicspec.Apply(ctx, b.cl, p), topicspec.ErrRejected)
	require.False(t, b.exists(ctx, t, b.prefix+".first"), "the topic before the rejected one is not created")
}

// TestPlanDeployFileOnOneBroker is `outbox topics apply -f deploy/topics.yaml`
// on a one-broker cluster: refused as it stands, clean with
// --replication-factor 1. Plans only: the names are the deploy file's.
func TestPlanDeployFileOnOneBroker(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t)
	f, err := topicspec.Load("../../../deploy/topics.yaml")
	require.NoError(t, err)
	specs, err := f.Specs()
	require.NoError(t, err)

	p, err := topicspec.MakePlan(ctx, b.cl, specs)
	require.NoError(t, err)
	require.ErrorIs(t, p.Err(), topicspec.ErrNotEnoughBrokers)
	require.ErrorIs(t, topicspec.Apply(ctx, b.cl, p), topicspec.ErrRefused)

	p, err = topicspec.MakePlan(ctx, b.cl, specs, topicspec.ReplicationFactor(1))
	require.NoError(t, err)
	require.NoError(t, p.Err(), "%v", p.Problems)
	require.Equal(t, len(specs), p.Pending(), "one create per topic")
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
