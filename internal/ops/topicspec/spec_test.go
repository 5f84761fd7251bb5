package topicspec_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/ops/topicspec"
)

func TestParseRejects(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown kind":           {"topics: [{name: a, kind: stream}]", `kind "stream" is not one of`},
		"no kind":                {"topics: [{name: a}]", "kind is required"},
		"unknown field":          {"topics: [{name: a, kind: event, retension: 7d}]", "field retension not found"},
		"unknown top-level key":  {"topic: [{name: a, kind: event}]", "field topic not found"},
		"duplicate yaml key":     {"topics: [{name: a, kind: event, kind: record}]", `"kind" already defined`},
		"bad retention":          {"topics: [{name: a, kind: event, retention: soon}]", `retention "soon"`},
		"twice":                  {"topics: [{name: a, kind: event}, {name: a, kind: record}]", "topic a is listed twice"},
		"bad name":               {"topics: [{name: 'a b', kind: event}]", "Kafka allows only"},
		"empty file":             {"", "no topics"},
		"only comments":          {"# nothing here yet\n", "no topics"},
		"empty topics":           {"defaults: {partitions: 3}\ntopics: []", "no topics"},
		"negative partitions":    {"topics: [{name: a, kind: event, partitions: -1}]", "topic a: partitions -1: want 1 or more"},
		"zero partitions":        {"topics: [{name: a, kind: event, partitions: 0}]", "topic a: partitions 0: want 1 or more"},
		"default partitions":     {"defaults: {partitions: 0}\ntopics: [{name: a, kind: event}]", "defaults: partitions 0"},
		"partitions overflow":    {"topics: [{name: a, kind: event, partitions: 99999999999}]", "cannot unmarshal"},
		"zero replication":       {"topics: [{name: a, kind: event, replication_factor: 0}]", "replication_factor 0: want 1 or more, or -1"},
		"replication below -1":   {"topics: [{name: a, kind: event, replication_factor: -2}]", "replication_factor -2"},
		"default replication":    {"defaults: {replication_factor: 0}\ntopics: [{name: a, kind: event}]", "defaults: replication_factor 0"},
		"misr above rf":          {"defaults: {replication_factor: 1, configs: {min.insync.replicas: '2'}}\ntopics: [{name: a, kind: event}]", "min.insync.replicas 2 is above replication_factor 1"},
		"misr not a number":      {"topics: [{name: a, kind: event, configs: {min.insync.replicas: two}}]", `min.insync.replicas "two"`},
		"compacted unkeyed":      {"topics: [{name: a, kind: record, keyed: false}]", "a compacted topic is always keyed"},
		"retention on compacted": {"topics: [{name: a, kind: checkpoint, retention: 7d}]", "compacted topics keep the newest record per key"},
		"second document":        {"topics: [{name: a, kind: event}]\n---\ntopics: [{name: b, kind: event}]\n", "more than one YAML document"},
	} {
		_, err := topicspec.Parse(strings.NewReader(tc.doc))
		require.ErrorIs(t, err, topicspec.ErrInvalid, name)
		require.ErrorContains(t, err, tc.want, name)
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	t.Parallel()
	_, err := topicspec.Load("testdata/does-not-exist.yaml")
	require.ErrorContains(t, err, "does-not-exist.yaml")
}

func TestSpecsDefaultsAndKeyed(t *testing.T) {
	t.Parallel()
	f, err := topicspec.Parse(strings.NewReader(`
defaults: {partitions: 6, replication_factor: 3}
topics:
  - {name: events, kind: event}
  - {name: events.raw, kind: event, keyed: false, partitions: 2, replication_factor: -1}
  - {name: checkpoints, kind: checkpoint}
  - {name: records, kind: record, keyed: true}
  - {name: dlq, kind: dead_letter}
  - {name: dlq.quarantine, kind: quarantine}
  - {name: dlq.ordered, kind: dead_letter, keyed: true}
`))
	require.NoError(t, err)
	specs, err := f.Specs()
	require.NoError(t, err)
	byName := map[string]topicspec.Spec{}
	for _, s := range specs {
		byName[s.Name] = s
	}
	require.Equal(t, int32(6), byName["events"].Partitions)
	require.Equal(t, int16(3), byName["events"].ReplicationFactor)
	require.False(t, byName["events"].Unkeyed, "events are keyed by aggregate id")
	require.Equal(t, int32(2), byName["events.raw"].Partitions)
	require.Equal(t, int16(topicspec.BrokerDefault), byName["events.raw"].ReplicationFactor)
	require.True(t, byName["events.raw"].Unkeyed)
	require.Equal(t, int32(1), byName["checkpoints"].Partitions, "a checkpoint topic defaults to one partition")
	require.False(t, byName["checkpoints"].Unkeyed)
	require.False(t, byName["records"].Unkeyed)
	require.True(t, byName["dlq"].Unkeyed, "dead letters are read by position")
	require.True(t, byName["dlq.quarantine"].Unkeyed)
	require.False(t, byName["dlq.ordered"].Unkeyed)

	f, err = topicspec.Parse(strings.NewReader("topics: [{name: a, kind: event}]"))
	require.NoError(t, err)
	specs, err = f.Specs()
	require.NoError(t, err)
	require.Equal(t, int32(1), specs[0].Partitions, "no defaults: one partition")
	require.Equal(t, int16(topicspec.BrokerDefault), specs[0].ReplicationFactor, "no defaults: the broker's replication factor")
}

func TestDeployExampleParses(t *testing.T) {
	t.Parallel()
	f, err := topicspec.Load("../../../deploy/topics.yaml")
	require.NoError(t, err)
	specs, err := f.Specs()
	require.NoError(t, err)
	kinds := map[string]bool{}
	for _, s := range specs {
		kinds[s.Kind] = true
		if s.Kind == topicspec.KindEvent || s.Kind == topicspec.KindCommand {
			require.False(t, s.Unkeyed, "%s must be keyed", s.Name)
		}
	}
	for _, k := range []string{topicspec.KindEvent, topicspec.KindCheckpoint, topicspec.KindCommand, topicspec.KindRetry, topicspec.KindDeadLetter} {
		require.True(t, kinds[k], "deploy/topics.yaml has no %s topic", k)
	}
}

func TestRetentionMillis(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"7d": 604800000, "36h": 129600000, "forever": -1} {
		got, err := topicspec.RetentionMillis(in)
		require.NoError(t, err)
		require.Equal(t, want, got, in)
	}
}
