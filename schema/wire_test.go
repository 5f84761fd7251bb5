package schema_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/outboxrelay/outbox/internal/testkit/registrytest"
	"github.com/outboxrelay/outbox/schema"
)

func TestMain(m *testing.M) { os.Exit(registrytest.Main(m)) }

// wireSet is a schemas folder with one event type in both formats, under a
// name of the test's own so a shared registry is fine.
func wireSet(t *testing.T) (*schema.Set, string) {
	t.Helper()
	name := fmt.Sprintf("wire.test.%d", time.Now().UnixNano())
	s, err := schema.LoadFiles(map[string][]byte{
		name + "/v1.avsc": []byte(`{"type":"record","name":"Paid","namespace":"t","fields":[
			{"name":"order_id","type":"string"},{"name":"amount_cents","type":"long"}]}`),
		name + "/v2.avsc": []byte(`{"type":"record","name":"Paid","namespace":"t","fields":[
			{"name":"order_id","type":"string"},{"name":"amount_cents","type":"long"},
			{"name":"note","type":["null","string"],"default":null}]}`),
		name + "/v1.json": []byte(`{"type":"object","required":["order_id"],"properties":{
			"order_id":{"type":"string"},"amount_cents":{"type":"integer","minimum":1}}}`),
	})
	require.NoError(t, err)
	return s, name
}

// TestValidate: a matching payload passes both formats' latest versions; a
// wrong type, a missing field, an unknown field (Avro would drop it) and
// broken JSON are *ValidationError naming the version and the field.
func TestValidate(t *testing.T) {
	t.Parallel()
	s, name := wireSet(t)
	require.NoError(t, s.Validate(name, []byte(`{"order_id":"o1","amount_cents":5,"note":"x"}`)))
	require.NoError(t, s.Validate(name, []byte(`{"order_id":"o1","amount_cents":5}`)), "a field with a default may be left out")
	require.NoError(t, s.Validate("no.such.type", []byte(`not json`)), "an event type without schemas is not checked")
	for payload, want := range map[string]string{
		`{"order_id":"o1","amount_cents":"5"}`:            "amount_cents",
		`{"amount_cents":5}`:                              "order_id",
		`{"order_id":"o1","amount_cents":0}`:              "minimum",
		`{"order_id":"o1","amount_cents":5,"extra":true}`: "extra",
		`{"order_id":`:                                    "JSON",
	} {
		err := s.Validate(name, []byte(payload))
		require.ErrorIs(t, err, schema.ErrMismatch, payload)
		var ve *schema.ValidationError
		require.True(t, errors.As(err, &ve), payload)
		require.Equal(t, name, ve.EventType)
		require.Contains(t, err.Error(), want, payload)
		require.Contains(t, ve.Version, name+" v", payload)
	}
}

// TestWireRoundTrip against a real registry (Apicurio's Confluent API):
// Register puts every version in, Encode writes magic byte 0, the id the
// registry gave the latest version and the Avro datum, and Decode, from the
// id alone, gives back the same JSON; JSON Schema values carry the text.
func TestWireRoundTrip(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := sr.NewClient(sr.URLs(registrytest.URL(t)))
	require.NoError(t, err)
	s, name := wireSet(t)

	// Before registration, a Wire that may not register says what to run.
	w, err := schema.NewWire(schema.WireConfig{Registry: cl, Set: s})
	require.NoError(t, err)
	_, _, err = w.Encode(ctx, name, []byte(`{"order_id":"o1","amount_cents":5}`))
	require.ErrorIs(t, err, schema.ErrNotRegistered)

	regs, err := schema.Register(ctx, cl, s)
	require.NoError(t, err)
	require.Len(t, regs, 3)
	again, err := schema.Register(ctx, cl, s)
	require.NoError(t, err)
	require.Equal(t, regs, again, "registering the same folder twice changes nothing")
	latestAvro := regs[1]
	require.Equal(t, name, latestAvro.Subject)
	require.Equal(t, name+"-json", regs[2].Subject)

	payload := []byte(`{"order_id":"o1","amount_cents":5,"note":"ring twice"}`)
	v, encoded, err := w.Encode(ctx, name, payload)
	require.NoError(t, err)
	require.True(t, encoded)
	require.Equal(t, byte(0), v[0])
	require.Equal(t, uint32(latestAvro.ID), binary.BigEndian.Uint32(v[1:5]))
	require.Less(t, len(v), len(payload), "the Avro datum is smaller than the JSON")

	_, _, err = w.Encode(ctx, name, []byte(`{"order_id":"o1"}`))
	require.ErrorIs(t, err, schema.ErrMismatch, "a payload missing a field without default is refused")
	raw, encoded, err := w.Encode(ctx, "no.schema", []byte(`{"x":1}`))
	require.NoError(t, err)
	require.False(t, encoded)
	require.JSONEq(t, `{"x":1}`, string(raw))

	// A Wire of a reader with no schemas folder decodes by id.
	r, err := schema.NewWire(schema.WireConfig{Registry: cl})
	require.NoError(t, err)
	back, decoded, err := r.Decode(ctx, v)
	require.NoError(t, err)
	require.True(t, decoded)
	require.JSONEq(t, string(payload), string(back))
	plain, decoded, err := r.Decode(ctx, payload)
	require.NoError(t, err)
	require.False(t, decoded, "a JSON value is not wire format")
	require.Equal(t, payload, plain)

	jw, err := schema.NewWire(schema.WireConfig{Registry: cl, Set: s, Format: schema.FormatJSON})
	require.NoError(t, err)
	jv, encoded, err := jw.Encode(ctx, name, payload)
	require.NoError(t, err)
	require.True(t, encoded)
	require.Equal(t, uint32(regs[2].ID), binary.BigEndian.Uint32(jv[1:5]))
	require.Equal(t, payload, jv[5:])
	back, _, err = r.Decode(ctx, jv)
	require.NoError(t, err)
	require.Equal(t, payload, back)

	// An id the registry does not know is said so, not decoded as garbage,
	// and is not a registry outage (retrying would not help).
	unknown := append([]byte{0, 0x7f, 0xff, 0xff, 0xf0}, v[5:]...)
	_, _, err = r.Decode(ctx, unknown)
	require.ErrorIs(t, err, schema.ErrUnknownSchema)
	require.NotErrorIs(t, err, schema.ErrRegistry)
	var m map[string]any
	require.NoError(t, json.Unmarshal(back, &m))
}

// BenchmarkWireEncode is the relay's cost per event of writing the wire
// format: a ~200-byte order payload to Avro (id cached after the first), and
// back, as eos and the sink decode it.
func BenchmarkWireEncode(b *testing.B) {
	ctx := context.Background()
	cl, err := sr.NewClient(sr.URLs(registrytest.URL(b)))
	require.NoError(b, err)
	s, err := schema.Load(os.DirFS("../schemas"))
	require.NoError(b, err)
	_, err = schema.Register(ctx, cl, s)
	require.NoError(b, err)
	w, err := schema.NewWire(schema.WireConfig{Registry: cl, Set: s})
	require.NoError(b, err)
	payload := []byte(`{"order_id":"01a24297-892e-7d52-a808-9cddfbe502e1","customer_id":"c-1042","amount_cents":12999,"currency":"EUR",` +
		`"items":[{"sku":"sku-1","quantity":2},{"sku":"sku-2","quantity":1}]}`)
	v, _, err := w.Encode(ctx, "order.created", payload)
	require.NoError(b, err)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := w.Encode(ctx, "order.created", payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := w.Decode(ctx, v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
