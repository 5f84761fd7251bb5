package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// The tests here run the built binary's on-call tools (topics, dlq, lag)
// against the cluster kafkatest gives (kfake, or real brokers with
// OUTBOX_TEST_KAFKA=apache), and check what they print, their exit code, and
// what they did or did not change on the cluster.

type opsBundle struct {
	k      *kafkatest.Kafka
	prefix string // of every topic name the test uses
	dir    string
}

func setupOps(t *testing.T) (*opsBundle, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return &opsBundle{k: kafkatest.New(t), prefix: fmt.Sprintf("ops%08x", rand.Uint32()), dir: t.TempDir()}, ctx
}

// run runs `outbox args... --brokers <the cluster>`.
func (b *opsBundle) run(t *testing.T, args ...string) result {
	t.Helper()
	r := outboxBin(t, nil, append(args, "--brokers", strings.Join(b.k.Brokers, ","))...)
	t.Logf("outbox %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// file writes a topics file whose %[1]s is the test's prefix and returns its path.
func (b *opsBundle) file(t *testing.T, name, doc string) string {
	t.Helper()
	p := filepath.Join(b.dir, name)
	if strings.Contains(doc, "%[1]s") {
		doc = fmt.Sprintf(doc, b.prefix)
	}
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o600))
	return p
}

// topics describes the named topics with a new client: a shared one could
// answer from metadata cached before the binary changed the cluster.
func (b *opsBundle) topics(ctx context.Context, t *testing.T, names ...string) kadm.TopicDetails {
	t.Helper()
	cl, err := kgo.NewClient(b.k.Opts()...)
	require.NoError(t, err)
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(ctx, names...)
	require.NoError(t, err)
	return td
}

func (b *opsBundle) partitions(ctx context.Context, t *testing.T, topic string) int {
	t.Helper()
	d, ok := b.topics(ctx, t, topic)[topic]
	require.True(t, ok, "topic %s exists", topic)
	require.NoError(t, d.Err)
	return len(d.Partitions)
}

// requireNoneExist fails the test if any of the topics exists.
func (b *opsBundle) requireNoneExist(ctx context.Context, t *testing.T, names ...string) {
	t.Helper()
	for name, d := range b.topics(ctx, t, names...) {
		require.Error(t, d.Err, "topic %s must not exist: nothing may be applied", name)
	}
}

// brokers is the number of brokers the cluster's metadata lists.
func (b *opsBundle) brokers(ctx context.Context, t *testing.T) int {
	t.Helper()
	m, err := b.k.Admin().BrokerMetadata(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, m.Brokers)
	return len(m.Brokers)
}

// produceKeyed writes one keyed record to topic, so that it holds records.
func (b *opsBundle) produceKeyed(ctx context.Context, t *testing.T, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(b.k.Opts()...)
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("order-42"), Value: []byte("{}")}).FirstErr())
}

// lines returns s's non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func TestTopicsApplyRefusesRepartitionOfTopicWithRecords(t *testing.T) {
	t.Parallel()
	b, ctx := setupOps(t)
	order := b.prefix + ".order"
	one := b.file(t, "one.yaml", "topics: [{name: %[1]s.order, kind: event, partitions: 1}]\n")
	three := b.file(t, "three.yaml", "topics: [{name: %[1]s.order, kind: event, partitions: 3}]\n")

	r := b.run(t, "topics", "apply", "-f", one)
	require.Equal(t, 0, r.code, "create the topic")
	require.Contains(t, r.stdout, "+ "+order+": create (event) partitions=1")
	b.produceKeyed(ctx, t, order)

	// Each way of asking prints the refusal in the plan, fails, and changes nothing.
	refusal := order + ": partitions 1 -> 3: more partitions for a keyed topic: records with an existing key will go to a different partition, so consumers lose per-key order across the change"
	for _, args := range [][]string{
		{"topics", "apply", "-f", three},
		{"topics", "apply", "-f", three, "--dry-run"},
		{"topics", "plan", "-f", three},
	} {
		r := b.run(t, args...)
		require.Equal(t, 1, r.code, "outbox %v refuses", args)
		require.Contains(t, r.stdout, "refused: "+refusal, "outbox %v: the plan says why", args)
		require.Contains(t, r.stdout, "--allow-repartition raises it anyway", "outbox %v: the plan names the override", args)
		require.Len(t, lines(r.stderr), 1, "outbox %v: one line on stderr", args)
		require.True(t, strings.HasPrefix(r.stderr, commandPath(t, args[:2])+": "), "outbox %v: the line names the command", args)
		require.Contains(t, r.stderr, refusal, "outbox %v: the line names the topic, the counts and the consequence", args)
		require.Contains(t, r.stderr, "--allow-repartition", "outbox %v: the line names the override", args)
		require.NotContains(t, r.stdout, "applied", "outbox %v", args)
		require.Equal(t, 1, b.partitions(ctx, t, order), "outbox %v: nothing applied", args)
	}

	// The override's plan still warns, and then raises the count.
	r = b.run(t, "topics", "plan", "-f", three, "--allow-repartition")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "warning: "+refusal)
	require.Equal(t, 1, b.partitions(ctx, t, order), "plan changes nothing")

	r = b.run(t, "topics", "apply", "-f", three, "--allow-repartition")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "warning: "+refusal)
	require.Contains(t, r.stdout, "applied 1 change(s)")
	require.Equal(t, 3, b.partitions(ctx, t, order))
}

func TestTopicsApplyRejectsInvalidFile(t *testing.T) {
	t.Parallel()
	b, ctx := setupOps(t)
	for _, tc := range []struct {
		name, doc, says string
	}{
		{"partitions 0", "topics:\n  - {name: %[1]s.a, kind: event}\n  - {name: %[1]s.b, kind: event, partitions: 0}\n", "topic " + b.prefix + ".b: partitions 0: want 1 or more"},
		{"partitions -1", "topics:\n  - {name: %[1]s.a, kind: event}\n  - {name: %[1]s.b, kind: event, partitions: -1}\n", "topic " + b.prefix + ".b: partitions -1: want 1 or more"},
		{"default partitions 0", "defaults: {partitions: 0}\ntopics:\n  - {name: %[1]s.a, kind: event, partitions: 2}\n  - {name: %[1]s.b, kind: event}\n", "defaults: partitions 0: want 1 or more"},
		{"empty file", "", "no topics: the file is empty"},
		{"comments only", "# topics to come\n", "no topics: the file is empty"},
	} {
		path := b.file(t, strings.ReplaceAll(tc.name, " ", "_")+".yaml", tc.doc)
		for _, action := range []string{"apply", "plan"} {
			r := b.run(t, "topics", action, "-f", path)
			require.Equal(t, 2, r.code, "%s: topics %s: an invalid file is a usage error", tc.name, action)
			require.Len(t, lines(r.stderr), 1, "%s: topics %s: one line", tc.name, action)
			require.Contains(t, r.stderr, path, "%s: topics %s: the line names the file", tc.name, action)
			require.Contains(t, r.stderr, tc.says, "%s: topics %s", tc.name, action)
			require.Empty(t, r.stdout, "%s: topics %s: no plan for an invalid file", tc.name, action)
		}
	}
	b.requireNoneExist(ctx, t, b.prefix+".a", b.prefix+".b")

	// Validated before any broker is asked: none listens here.
	r := outboxBin(t, nil, "topics", "apply", "-f", b.file(t, "zero.yaml", "topics: [{name: x, kind: event, partitions: 0}]\n"), "--brokers", "127.0.0.1:1")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "partitions 0: want 1 or more")
}

func TestTopicsApplyReplicationFactorAboveBrokersChangesNothing(t *testing.T) {
	t.Parallel()
	b, ctx := setupOps(t)
	n := b.brokers(ctx, t)
	// The first topic alone could be created, and must not be, since the
	// plan as a whole fails.
	path := b.file(t, "topics.yaml", fmt.Sprintf(`
topics:
  - {name: %%[1]s.fits, kind: event, replication_factor: 1}
  - {name: %%[1]s.toobig, kind: event, replication_factor: %d}
`, n+2))
	names := []string{b.prefix + ".fits", b.prefix + ".toobig"}
	r := b.run(t, "topics", "apply", "-f", path)
	require.Equal(t, 1, r.code)
	tooBig := fmt.Sprintf("%s.toobig: create with replication factor %d: not enough live brokers (the cluster has %d, it needs %d)", b.prefix, n+2, n, n+2)
	require.Contains(t, r.stdout, "refused: "+tooBig)
	require.Contains(t, r.stdout, "nothing will be changed")
	require.Len(t, lines(r.stderr), 1)
	require.Contains(t, r.stderr, "nothing changed")
	require.Contains(t, r.stderr, tooBig)
	b.requireNoneExist(ctx, t, names...)

	// The override, likewise, is checked against the live brokers.
	r = b.run(t, "topics", "apply", "-f", path, "--replication-factor", strconv.Itoa(n+1))
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, fmt.Sprintf("%s.fits: create with replication factor %d: not enough live brokers", b.prefix, n+1))
	b.requireNoneExist(ctx, t, names...)

	r = b.run(t, "topics", "apply", "-f", path, "--replication-factor", "-2")
	require.Equal(t, 2, r.code, "a replication factor no cluster takes is a usage error")
	require.Contains(t, r.stderr, "--replication-factor -2")
	b.requireNoneExist(ctx, t, names...)

	// The single-broker override makes the file fit.
	r = b.run(t, "topics", "apply", "-f", path, "--replication-factor", "1")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "applied 2 change(s)")
	for _, name := range names {
		require.Equal(t, 1, b.partitions(ctx, t, name))
	}
}

func TestDLQOnMissingTopic(t *testing.T) {
	t.Parallel()
	b, _ := setupOps(t)
	topic := b.prefix + ".dlt"
	for _, args := range [][]string{
		{"dlq", "list", "--topic", topic},
		{"dlq", "list", "--topic", topic, "--json"},
		{"dlq", "show", "--topic", topic, "0:0"},
		{"dlq", "replay", "--topic", topic},
		{"dlq", "replay", "--topic", topic, "--dry-run"},
	} {
		r := b.run(t, args...)
		require.Equal(t, 1, r.code, "outbox %v", args)
		require.Equal(t, []string{commandPath(t, args[:2]) + ": topic " + topic + " does not exist (no dead letters yet, or a wrong --topic; `outbox topics apply` creates it)"},
			lines(r.stderr), "outbox %v: one line saying what it means", args)
		require.NotContains(t, r.stderr, "UNKNOWN_TOPIC_OR_PARTITION", "outbox %v", args)
		require.Empty(t, r.stdout, "outbox %v: no empty table, no summary of zeros", args)
	}
}

func TestLagWithoutGroups(t *testing.T) {
	t.Parallel()
	b, ctx := setupOps(t)

	// Only a cluster of this test's own is known to have no group at all;
	// real brokers are shared with other tests.
	if !b.k.Real() {
		r := b.run(t, "lag", "--window", "1")
		require.Equal(t, 0, r.code, "no group is no alert")
		require.Contains(t, r.stdout, "no consumer group on the cluster")
		require.Contains(t, r.stdout, "--group NAME")
		require.NotContains(t, r.stdout, "PARTITION_STATUS", "no table header over no rows")

		r = b.run(t, "lag", "--window", "1", "--json")
		require.Equal(t, 0, r.code)
		require.Contains(t, r.stdout, `"groups":[]`)
	}

	// Named groups that do not exist are named, and fail the check: a typo
	// in a cron job's --group must not pass as "no lag".
	ghost := b.prefix + "-ghost"
	r := b.run(t, "lag", "--window", "1", "--group", ghost+","+ghost+"-2")
	require.Equal(t, 1, r.code)
	want := "no consumer group named " + ghost + ", " + ghost + "-2 on the cluster"
	require.Contains(t, r.stdout, want)
	require.NotContains(t, r.stdout, "PARTITION_STATUS")
	require.Len(t, lines(r.stderr), 1)
	require.Contains(t, r.stderr, want)
	require.Contains(t, r.stderr, "a wrong --group")

	r = b.run(t, "lag", "--window", "1", "--group", ghost, "--json")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stdout, `"missing_groups":["`+ghost+`"]`)

	// Beside a group that exists, the missing one is still named.
	topic := b.prefix + ".order"
	b.k.CreateTopic(topic, 1, nil)
	existing := b.prefix + "-existing"
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 0})
	resp, err := b.k.Admin().CommitOffsets(ctx, existing, offs)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	r = b.run(t, "lag", "--window", "1", "--group", existing+","+ghost)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stdout, "PARTITION_STATUS")
	require.Regexp(t, `(?m)^`+existing+`\s+OK`, r.stdout, "the existing group's row")
	require.Contains(t, r.stdout, "no consumer group named "+ghost+" on the cluster")
	require.Contains(t, r.stderr, "no consumer group named "+ghost+" on the cluster")

	r = b.run(t, "lag", "--window", "1", "--group", existing)
	require.Equal(t, 0, r.code)
	require.NotContains(t, r.stdout+r.stderr, "no consumer group")
}
