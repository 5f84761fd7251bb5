package eos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/registrytest"
	"github.com/outboxrelay/outbox/schema"
)

// TestDecodeWireValues: with a Decoder (a schema.Wire on a real registry),
// the transform sees the JSON the writer stored for values in the
// Confluent wire format, and plain values as they are; a value whose
// schema id the registry does not know is dead-lettered with class
// "schema", as written, while the records around it flow on.
func TestDecodeWireValues(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, etype := registrytest.Wire(ctx, t, "eos.wire", `{"type":"record","name":"Paid","fields":[
		{"name":"order_id","type":"string"},{"name":"amount_cents","type":"long"}]}`)

	k := kafkatest.New(t)
	in := k.Topic("wire-in", 2, nil)
	out := k.Topic("wire-out", 2, nil)
	dlq := k.Topic("wire-dlq", 1, nil)
	const n = 40
	var recs []*kgo.Record
	want := map[string]string{}
	var err error
	for i := range n {
		id := fmt.Sprintf("o-%02d", i)
		payload := fmt.Sprintf(`{"order_id":%q,"amount_cents":%d}`, id, 100+i)
		v := []byte(payload)
		if i%4 != 3 { // every fourth stays plain JSON
			v, _, err = w.Encode(ctx, etype, []byte(payload))
			require.NoError(t, err)
		}
		if i == 17 {
			v = append([]byte{0, 0x7f, 0xff, 0xff, 0xf1}, v[5:]...) // an id no registry gave
		} else {
			want[id] = payload
		}
		recs = append(recs, &kgo.Record{Topic: in, Key: []byte(id), Value: v,
			Headers: []kgo.RecordHeader{{Key: envelope.HeaderEventID, Value: []byte("ev-" + id)}}})
	}
	pcl, err := kgo.NewClient(k.Opts()...)
	require.NoError(t, err)
	require.NoError(t, pcl.ProduceSync(ctx, recs...).FirstErr())
	pcl.Close()

	s, err := New(Config{
		Name: "wire-stage", KafkaOpts: k.Opts(), Group: "wire-" + in, InputTopics: []string{in},
		OutputTopic: out, DeadLetterTopic: dlq, TransactionalID: "wire-" + in, Decoder: w,
		Transform: func(_ context.Context, r *kgo.Record) ([]*kgo.Record, error) {
			if !json.Valid(r.Value) {
				return nil, fmt.Errorf("the transform got %q, not JSON", r.Value)
			}
			return []*kgo.Record{{Key: r.Key, Value: r.Value}}, nil
		},
		SessionTimeout: 6 * time.Second, TransactionTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	require.Eventually(t, func() bool { return testutil.ToFloat64(s.m.recordsIn) == n }, time.Minute, 20*time.Millisecond)
	require.NoError(t, s.Stop(ctx))

	outs, err := k.ReadCommitted(ctx, out)
	require.NoError(t, err)
	got := map[string]string{}
	for _, r := range outs {
		got[string(r.Key)] = string(r.Value)
	}
	require.Len(t, got, n-1)
	for id, p := range want {
		require.JSONEq(t, p, got[id], id)
	}
	dead, err := k.ReadCommitted(ctx, dlq)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "o-17", string(dead[0].Key))
	require.Equal(t, recs[17].Value, dead[0].Value, "the dead letter is the input as written")
	dl := envelope.ParseDeadLetter(toEnvelope(dead[0].Headers))
	require.Equal(t, "schema", dl.ErrorClass)
	require.Contains(t, dl.ErrorMessage, "no schema with the value's id")
}

// TestDecodeRegistryOutageDeadLettersNothing: while the registry answers
// 503 (a proxy in front of the real one), the stage aborts and retries
// instead of dead-lettering; once it answers, every record goes through.
func TestDecodeRegistryOutageDeadLettersNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	target, err := url.Parse(registrytest.URL(t))
	require.NoError(t, err)
	var up atomic.Bool
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{DisableKeepAlives: true}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, `{"error_code":50301,"message":"down for the test"}`, http.StatusServiceUnavailable)
			return
		}
		r.URL.Path = strings.TrimPrefix(r.URL.Path, target.Path) // the proxy puts it back
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	newClient := func(u string) *sr.Client {
		cl, err := sr.NewClient(sr.URLs(u), sr.HTTPClient(&http.Client{
			Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}))
		require.NoError(t, err)
		return cl
	}
	enc, etype := registrytest.Wire(ctx, t, "eos.outage", `{"type":"record","name":"Paid","fields":[
		{"name":"order_id","type":"string"}]}`)

	k := kafkatest.New(t)
	in := k.Topic("outage-in", 1, nil)
	out := k.Topic("outage-out", 1, nil)
	dlq := k.Topic("outage-dlq", 1, nil)
	const n = 10
	var recs []*kgo.Record
	for i := range n {
		v, _, err := enc.Encode(ctx, etype, []byte(fmt.Sprintf(`{"order_id":"o-%d"}`, i)))
		require.NoError(t, err)
		recs = append(recs, &kgo.Record{Topic: in, Key: []byte("k"), Value: v})
	}
	pcl, err := kgo.NewClient(k.Opts()...)
	require.NoError(t, err)
	require.NoError(t, pcl.ProduceSync(ctx, recs...).FirstErr())
	pcl.Close()

	dec, err := schema.NewWire(schema.WireConfig{Registry: newClient(front.URL + target.Path)})
	require.NoError(t, err)
	s, err := New(Config{
		Name: "outage-stage", KafkaOpts: k.Opts(), Group: "outage-" + in, InputTopics: []string{in},
		OutputTopic: out, DeadLetterTopic: dlq, TransactionalID: "outage-" + in, Decoder: dec,
		Transform: func(_ context.Context, r *kgo.Record) ([]*kgo.Record, error) {
			return []*kgo.Record{{Key: r.Key, Value: r.Value}}, nil
		},
		SessionTimeout: 6 * time.Second, TransactionTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	require.Eventually(t, func() bool { return testutil.ToFloat64(s.m.txnAborted) >= 2 }, time.Minute, 50*time.Millisecond,
		"the stage aborts while the registry is down")
	require.Zero(t, testutil.ToFloat64(s.m.deadLettered), "an outage dead-letters nothing")
	up.Store(true)
	require.Eventually(t, func() bool { return testutil.ToFloat64(s.m.recordsOut) == n }, time.Minute, 50*time.Millisecond)
	require.NoError(t, s.Stop(ctx))
	outs, err := k.ReadCommitted(ctx, out)
	require.NoError(t, err)
	require.Len(t, outs, n)
	for i, r := range outs {
		require.JSONEq(t, fmt.Sprintf(`{"order_id":"o-%d"}`, i), string(r.Value))
	}
	dead, err := k.ReadCommitted(ctx, dlq)
	require.NoError(t, err)
	require.Empty(t, dead)
}
