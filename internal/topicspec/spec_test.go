package topicspec_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/topicspec"
)

func TestParseRejects(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"unknown kind":  "topics: [{name: a, kind: stream}]",
		"unknown field": "topics: [{name: a, kind: event, retension: 7d}]",
		"bad retention": "topics: [{name: a, kind: event, retention: soon}]",
		"twice":         "topics: [{name: a, kind: event}, {name: a, kind: record}]",
		"bad name":      "topics: [{name: 'a b', kind: event}]",
	} {
		_, err := topicspec.Parse(strings.NewReader(doc))
		require.Error(t, err, name)
	}
}

func TestDeployExampleParses(t *testing.T) {
	t.Parallel()
	f, err := topicspec.Load("../../deploy/topics.yaml")
	require.NoError(t, err)
	specs, err := f.Specs()
	require.NoError(t, err)
	kinds := map[string]bool{}
	for _, s := range specs {
		kinds[s.Kind] = true
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
