package ingest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

// TestParseConfig reads a YAML and a JSON file into sources with the
// presets' defaults, secrets from the environment.
func TestParseConfig(t *testing.T) {
	t.Parallel()
	yamlDoc := `
max_body_bytes: 65536
dedup_window: 96h
sources:
  stripe:
    preset: stripe
    secret_env: [STRIPE_NEW, STRIPE_OLD]
    tolerance: 10m
    mapping:
      version: /data/object/metadata/version
  gh:
    preset: github
    secret_env: [GH]
    topics: {raw: gh.raw}
  acme:
    preset: generic
    secret_env: [ACME]
    signature: {header: x-acme-signature, encoding: base64, prefix: "sha256="}
    delivery_id: header:X-Acme-Delivery
    mapping: {entity_type: "=order", entity_id: /id, updated_at: /updated_at, event_type: /event}
`
	vars := env(map[string]string{"STRIPE_NEW": "new", "STRIPE_OLD": "old", "GH": "g", "ACME": "a"})
	cfg, err := ParseConfig([]byte(yamlDoc), vars)
	require.NoError(t, err)
	require.EqualValues(t, 65536, cfg.MaxBodyBytes)
	require.Equal(t, 96*time.Hour, cfg.DedupWindow)
	require.Len(t, cfg.Sources, 3)
	by := map[string]Source{}
	for _, s := range cfg.Sources {
		by[s.Name] = s
	}
	st := by["stripe"]
	require.Equal(t, [][]byte{[]byte("new"), []byte("old")}, st.Secrets)
	require.Equal(t, 10*time.Minute, st.Tolerance)
	require.Equal(t, Field("/id"), st.DeliveryID)
	require.Equal(t, Mapping{EntityType: "/data/object/object", EntityID: "/data/object/id", Version: "/data/object/metadata/version",
		EventType: "/type", Object: "/data/object"}, st.Mapping)
	require.Equal(t, Topics{Raw: "webhooks.stripe", Records: "stripe.records", Events: "stripe.events"}, st.Topics)
	gh := by["gh"]
	require.Equal(t, Field("header:X-GitHub-Delivery"), gh.DeliveryID)
	require.Equal(t, Topics{Raw: "gh.raw", Records: "gh.records", Events: "gh.events"}, gh.Topics)
	require.Equal(t, "X-Acme-Signature", by["acme"].Signature.Header)

	jsonDoc := `{"sources": {"s": {"preset": "stripe", "secret_env": ["STRIPE_NEW"]}}}`
	cfg, err = ParseConfig([]byte(jsonDoc), vars)
	require.NoError(t, err)
	require.Equal(t, DefaultStripeTolerance, cfg.Sources[0].Tolerance)
	require.Equal(t, Field("/created"), cfg.Sources[0].Mapping.Version)
}

// TestParseConfigErrors: each mistake is an ErrConfig naming what to fix.
func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	vars := env(map[string]string{"S": "secret"})
	for _, tc := range []struct{ doc, want string }{
		{``, "the file is empty"},
		{`sources: {}`, "no sources"},
		{`sources: {s: {preset: stripe, secret_env: [S], tolrance: 1m}}`, "field tolrance not found"},
		{`sources: {s: {preset: stripe, secret_env: [MISSING]}}`, `source "s": secret_env MISSING is not set`},
		{`sources: {s: {preset: stripe}}`, `source "s": no secret`},
		{`sources: {s: {secret_env: [S]}}`, `source "s": preset is required`},
		{`sources: {s: {preset: paypal, secret_env: [S]}}`, `preset "paypal": use stripe, github or generic`},
		{`sources: {S!: {preset: stripe, secret_env: [S]}}`, `name must match`},
		{`sources: {s: {preset: github, secret_env: [S], tolerance: 1m}}`, "tolerance applies to the stripe preset only"},
		{`sources: {s: {preset: stripe, secret_env: [S], signature: {header: X}}}`, "signature applies to the generic preset only"},
		{`sources: {s: {preset: generic, secret_env: [S], delivery_id: header:X}}`, "signature.header is required"},
		{`sources: {s: {preset: generic, secret_env: [S], signature: {header: X, encoding: b32}, delivery_id: header:X}}`, `signature.encoding "b32"`},
		{`sources: {s: {preset: generic, secret_env: [S], signature: {header: X}}}`, "delivery_id is required"},
		{`sources: {s: {preset: generic, secret_env: [S], signature: {header: X}, delivery_id: header:X, mapping: {version: /v}}}`, "mapping.entity_id is required"},
		{`sources: {s: {preset: generic, secret_env: [S], signature: {header: X}, delivery_id: header:X, mapping: {entity_id: /id, entity_type: /t, event_type: /e}}}`, "needs version or updated_at"},
		{`sources: {s: {preset: stripe, secret_env: [S], mapping: {version: data/v}}}`, `mapping.version: JSON pointer "data/v" must start with /`},
		{`sources: {s: {preset: stripe, secret_env: [S], delivery_id: "header:"}}`, `delivery_id: "header:" names no header`},
		{`sources: {s: {preset: stripe, secret_env: [S], topics: {records: "a b"}}}`, "topics.records"},
		{`dedup_window: 1ms
sources: {s: {preset: stripe, secret_env: [S]}}`, "dedup_window 1ms is below one second"},
	} {
		_, err := ParseConfig([]byte(tc.doc), vars)
		require.ErrorIs(t, err, ErrConfig, tc.doc)
		require.ErrorContains(t, err, tc.want, tc.doc)
	}
}
