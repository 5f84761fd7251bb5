package ingest

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestGitHubMappingDefaults: the entity is the object X-GitHub-Event names,
// else the repository, ordered by its updated_at; the event type is
// EVENT.ACTION; a body with neither object is ErrUnmapped.
func TestGitHubMappingDefaults(t *testing.T) {
	t.Parallel()
	src := validSource(t, Source{Name: "gh", Preset: PresetGitHub, Secrets: [][]byte{[]byte("s")}})
	parse := func(event, body string) (*delivery, error) {
		h := http.Header{"X-Github-Delivery": {"d-1"}}
		if event != "" {
			h.Set("X-GitHub-Event", event)
		}
		return src.parse(h, []byte(body))
	}
	d, err := parse("pull_request", `{"action":"closed","pull_request":{"id":9,"updated_at":"2024-05-01T10:00:00Z"},"repository":{"id":7}}`)
	require.NoError(t, err)
	require.Equal(t, "d-1", d.id)
	require.Equal(t, "gh.pull_request.9", d.entityKey(src.Name))
	require.Equal(t, "pull_request.closed", d.eventType)
	require.Equal(t, time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), d.updatedAt.UTC())
	require.False(t, d.hasVersion)
	require.JSONEq(t, `{"id":9,"updated_at":"2024-05-01T10:00:00Z"}`, string(d.object))

	d, err = parse("push", `{"ref":"refs/heads/main","repository":{"id":7,"updated_at":"2024-05-01T09:00:00Z"}}`)
	require.NoError(t, err)
	require.Equal(t, "gh.repository.7", d.entityKey(src.Name))
	require.Equal(t, "push", d.eventType, "no action: the event name alone")

	_, err = parse("ping", `{"zen":"Keep it logically awesome.","hook_id":1}`)
	require.ErrorIs(t, err, ErrUnmapped)
	require.ErrorContains(t, err, `no object for event "ping"`)
	_, err = parse("", `{"issue":{"id":1}}`)
	require.ErrorIs(t, err, ErrUnmapped)
	_, err = parse("issues", `{"issue":{"id":1}}`)
	require.ErrorIs(t, err, ErrUnmapped, "no updated_at to order by")
	_, err = parse("issues", `not json`)
	require.ErrorIs(t, err, ErrNotJSON)
}

// TestMappingValues: versions as numbers or digit strings, updated_at as RFC
// 3339 or Unix seconds, constants, headers, and RFC 6901 escapes.
func TestMappingValues(t *testing.T) {
	t.Parallel()
	src := validSource(t, Source{Name: "g", Preset: PresetGeneric, Secrets: [][]byte{[]byte("s")},
		Signature: Signature{Header: "X-Sig"}, DeliveryID: "/meta/a~1b",
		Mapping: Mapping{EntityType: "=order", EntityID: "/items/1/id", Version: "/v", UpdatedAt: "header:X-Updated", EventType: "/e~0t", Object: "/items/1"}})
	h := http.Header{"X-Updated": {"1700000000"}}
	d, err := src.parse(h, []byte(`{"meta":{"a/b":"dlv"},"items":[{"id":"x"},{"id":42}],"v":"17","e~t":"order.paid"}`))
	require.NoError(t, err)
	require.Equal(t, "dlv", d.id)
	require.Equal(t, "g.order.42", d.entityKey(src.Name))
	require.EqualValues(t, 17, d.version)
	require.Equal(t, time.Unix(1700000000, 0).UTC(), *d.updatedAt)
	require.Equal(t, "order.paid", d.eventType)
	require.JSONEq(t, `{"id":42}`, string(d.object))

	for body, want := range map[string]string{
		`{"meta":{"a/b":"d"},"items":[{},{"id":1}],"v":1.5,"e~t":"x"}`:         "not an integer",
		`{"meta":{"a/b":"d"},"items":[{},{"id":{"n":1}}],"v":1,"e~t":"x"}`:     "entity_id /items/1/id is not a string or number",
		`{"meta":{"a/b":"d"},"items":[{"id":1}],"v":1,"e~t":"x"}`:              "entity_id /items/1/id is missing",
		`{"meta":{},"items":[{},{"id":1}],"v":1,"e~t":"x"}`:                    "delivery_id /meta/a~1b is missing",
		`{"meta":{"a/b":"d"},"items":[{},{"id":1}],"v":"12a","e~t":"order.x"}`: "is 12a, not an integer",
	} {
		_, err := src.parse(h, []byte(body))
		require.ErrorIs(t, err, ErrUnmapped, body)
		require.ErrorContains(t, err, want, body)
	}
	_, err = src.parse(http.Header{"X-Updated": {"yesterday"}}, []byte(`{"meta":{"a/b":"d"},"items":[{},{"id":1}],"v":1,"e~t":"x"}`))
	require.ErrorContains(t, err, "not RFC 3339 or Unix seconds")
}
