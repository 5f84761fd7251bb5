package sink

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/testkit/registrytest"
)

// TestWireValuesDecoded: with a Decoder (a schema.Wire on a real
// registry), the API receives the JSON the writer stored for values in the
// Confluent wire format, and plain values as they are; a value whose
// schema id the registry does not know is a permanent failure of class
// "schema", dead-lettered without a call.
func TestWireValuesDecoded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, etype := registrytest.Wire(ctx, t, "sink.wire", `{"type":"record","name":"Charge","fields":[
		{"name":"order_id","type":"string"},{"name":"amount_cents","type":"long"}]}`)

	b := setup(t, 1)
	want := map[string]string{}
	var recs []*kgo.Record
	var unknown uuid.UUID
	var err error
	for i := range 5 {
		id := uuid.Must(uuid.NewV7())
		payload := fmt.Sprintf(`{"order_id":"o-%d","amount_cents":%d}`, i, 100+i)
		v := []byte(payload)
		switch i {
		case 0, 1, 2:
			v, _, err = w.Encode(ctx, etype, v)
			require.NoError(t, err)
			want[id.String()] = payload
		case 3: // an id no registry gave
			v, _, err = w.Encode(ctx, etype, v)
			require.NoError(t, err)
			v = append([]byte{0, 0x7f, 0xff, 0xff, 0xf2}, v[5:]...)
			unknown = id
		case 4: // not in the wire format
			want[id.String()] = payload
		}
		recs = append(recs, &kgo.Record{Topic: b.topic, Key: []byte("k"), Value: v,
			Headers: []kgo.RecordHeader{{Key: envelope.HeaderEventID, Value: []byte(id.String())}, {Key: envelope.HeaderEventType, Value: []byte(etype)}}})
		b.events = append(b.events, id)
	}
	pcl, err := kgo.NewClient(b.kafka.Opts()...)
	require.NoError(t, err)
	require.NoError(t, pcl.ProduceSync(ctx, recs...).FirstErr())
	pcl.Close()

	cfg := b.config("wire", b.endpoint(false))
	cfg.Decoder = w
	b.start(cfg)
	c := b.waitSettled(time.Minute, StatusSucceeded, StatusDeadLettered)
	require.Equal(t, map[string]int{StatusSucceeded: 4, StatusDeadLettered: 1}, c)

	b.api.mu.Lock()
	for id, payload := range want {
		require.JSONEq(t, payload, string(b.api.bodies[id]), "the API got the JSON the writer stored")
	}
	require.Zero(t, len(b.api.requests[unknown.String()]), "no call for a value that cannot be decoded")
	b.api.mu.Unlock()
	dead, err := b.kafka.ReadCommitted(ctx, b.topic+".dlt")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	dl := envelope.ParseDeadLetter(headers(dead[0]))
	require.Equal(t, "schema", dl.ErrorClass)
	require.Contains(t, dl.ErrorMessage, "no schema with the value's id")
}
