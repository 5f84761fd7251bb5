package schema_test

import (
	"os"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/schema"
)

const (
	recA  = `{"type":"record","name":"E","fields":[{"name":"a","type":"int"}]}`
	recAB = `{"type":"record","name":"E","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}`
)

// TestLoadRepositoryFolder loads the repository's own schemas folder: the
// layout the docs describe, with both formats parsed.
func TestLoadRepositoryFolder(t *testing.T) {
	t.Parallel()
	s, err := schema.Load(os.DirFS("../schemas"))
	require.NoError(t, err)
	require.Contains(t, s.Types(), "order.created")
	avro := s.History("order.created", schema.FormatAvro)
	require.GreaterOrEqual(t, len(avro), 2)
	require.NotNil(t, avro.Latest().Avro())
	js := s.History("order.created", schema.FormatJSON)
	require.NotEmpty(t, js)
	require.NoError(t, js.Latest().JSONSchema().Validate(map[string]any{
		"order_id": "o1", "customer_id": "c1", "amount_cents": 100, "currency": "EUR"}))
	require.Error(t, js.Latest().JSONSchema().Validate(map[string]any{"order_id": "o1"}), "required fields are enforced")
}

// TestLoadRejectsBrokenLayout: every way a folder can leave a schema
// unchecked is an error naming the file.
func TestLoadRejectsBrokenLayout(t *testing.T) {
	t.Parallel()
	for name, files := range map[string]fstest.MapFS{
		"gap":          {"e/v1.avsc": {Data: []byte(recA)}, "e/v3.avsc": {Data: []byte(recA)}},
		"bad name":     {"e/version1.avsc": {Data: []byte(recA)}},
		"v0":           {"e/v0.avsc": {Data: []byte(recA)}},
		"nested":       {"e/old/v1.avsc": {Data: []byte(recA)}},
		"at the root":  {"v1.avsc": {Data: []byte(recA)}},
		"bad avro":     {"e/v1.avsc": {Data: []byte(`{"type":"record","name":"E"}`)}},
		"bad json":     {"e/v1.json": {Data: []byte(`{"type":"object",`)}},
		"bad keyword":  {"e/v1.json": {Data: []byte(`{"type":"nonsense"}`)}},
		"unknown ext.": {"e/v1.proto": {Data: []byte(`syntax = "proto3";`)}},
	} {
		_, err := schema.Load(files)
		require.ErrorIs(t, err, schema.ErrInvalid, name)
	}
	_, err := schema.Load(fstest.MapFS{"README.md": {Data: []byte("# docs")}, "e/v1.avsc": {Data: []byte(recA)}, "e/NOTES.md": {}})
	require.NoError(t, err, "markdown is documentation")
}

// TestCheckNamesFieldInsideArrays: the field path goes through records,
// arrays and maps to the field whose type broke.
func TestCheckNamesFieldInsideArrays(t *testing.T) {
	t.Parallel()
	item := func(t string) string {
		return `{"type":"record","name":"E","fields":[{"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"qty","type":"` + t + `"}]}}}]}`
	}
	old, err := schema.Parse("old.avsc", []byte(item("int")))
	require.NoError(t, err)
	next, err := schema.Parse("new.avsc", []byte(item("string")))
	require.NoError(t, err)
	vs, err := schema.Check(schema.Backward, schema.History{old}, next)
	require.NoError(t, err)
	require.Len(t, vs, 1)
	require.Equal(t, schema.RuleTypeMismatch, vs[0].Rule)
	require.Equal(t, "items.[].qty", vs[0].Field)
	require.Equal(t, schema.NewReadsOld, vs[0].Direction)

	vs, err = schema.Check(schema.None, schema.History{old}, next)
	require.NoError(t, err)
	require.Empty(t, vs, "NONE checks nothing")
}

// TestCheckChanges: versions removed or rewritten since the earlier
// revision are violations; JSON Schema is reported as not checked.
func TestCheckChanges(t *testing.T) {
	t.Parallel()
	old, err := schema.LoadFiles(map[string][]byte{"e/v1.avsc": []byte(recA), "e/v2.avsc": []byte(recA), "j/v1.json": []byte(`{}`)})
	require.NoError(t, err)
	cur, err := schema.LoadFiles(map[string][]byte{"e/v1.avsc": []byte(recAB), "j/v1.json": []byte(`{}`), "j/v2.json": []byte(`{}`)})
	require.NoError(t, err)
	res, err := schema.CheckChanges(schema.Backward, old, cur)
	require.NoError(t, err)
	rules := map[string]int{}
	for _, v := range res.Violations {
		rules[v.Rule] = v.Version
	}
	require.Equal(t, map[string]int{schema.RuleVersionRewritten: 1, schema.RuleVersionRemoved: 2}, rules)
	require.Equal(t, []string{"j v2 (JSON)"}, res.NotChecked)
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	m, err := schema.ParseMode("")
	require.NoError(t, err)
	require.Equal(t, schema.Backward, m)
	m, err = schema.ParseMode("full_transitive")
	require.NoError(t, err)
	require.True(t, m.Backward() && m.Forward() && m.Transitive())
	_, err = schema.ParseMode("SIDEWAYS")
	require.ErrorIs(t, err, schema.ErrMode)
}
