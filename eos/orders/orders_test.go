package orders

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
)

func event(typ, payload string, extra ...kgo.RecordHeader) *kgo.Record {
	hs := append([]kgo.RecordHeader{
		{Key: envelope.HeaderEventID, Value: []byte("0190f3c2-0000-7000-8000-000000000001")},
		{Key: envelope.HeaderEventType, Value: []byte(typ)},
		{Key: envelope.HeaderAggregateType, Value: []byte("order")},
		{Key: envelope.HeaderAggregateID, Value: []byte("o-1")},
	}, extra...)
	return &kgo.Record{Topic: "outbox.order", Key: []byte("o-1"), Value: []byte(payload), Headers: hs, Timestamp: time.Unix(1700000000, 0)}
}

func hdr(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

func TestOrderCreatedBecomesCommands(t *testing.T) {
	t.Parallel()
	tf := Transform(Config{})
	in := event(EventOrderCreated, `{"order_id":"o-1","customer_id":"c-9","amount_cents":1299,"currency":"EUR","items":[{"sku":"x","qty":2}],"shipping_address":{"city":"Lyon"}}`,
		kgo.RecordHeader{Key: envelope.HeaderCorrelationID, Value: []byte("corr-1")},
		kgo.RecordHeader{Key: envelope.HeaderTraceparent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		kgo.RecordHeader{Key: envelope.HeaderTracestate, Value: []byte("vendor=1")},
	)
	outs, err := tf(context.Background(), in)
	require.NoError(t, err)
	require.Len(t, outs, 2)
	pay, ship := outs[0], outs[1]
	require.Equal(t, "commands.payment", pay.Topic)
	require.Equal(t, "commands.shipping", ship.Topic)
	for _, o := range outs {
		require.Equal(t, "o-1", string(o.Key))
		require.Equal(t, "corr-1", hdr(o, envelope.HeaderCorrelationID))
		require.Equal(t, "0190f3c2-0000-7000-8000-000000000001", hdr(o, envelope.HeaderCausationID))
		require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", hdr(o, envelope.HeaderTraceparent))
		require.Equal(t, "vendor=1", hdr(o, envelope.HeaderTracestate))
		require.NotEqual(t, hdr(in, envelope.HeaderEventID), hdr(o, envelope.HeaderEventID))
	}
	require.Equal(t, CommandPaymentRequested, hdr(pay, envelope.HeaderEventType))
	require.Equal(t, CommandShippingRequest, hdr(ship, envelope.HeaderEventType))
	var p PaymentRequested
	require.NoError(t, json.Unmarshal(pay.Value, &p))
	require.Equal(t, PaymentRequested{"o-1", "c-9", 1299, "EUR"}, p)
	var s ShippingRequested
	require.NoError(t, json.Unmarshal(ship.Value, &s))
	require.JSONEq(t, `{"city":"Lyon"}`, string(s.Address))

	again, err := tf(context.Background(), in)
	require.NoError(t, err)
	require.Equal(t, hdr(pay, envelope.HeaderEventID), hdr(again[0], envelope.HeaderEventID), "command ids are stable across re-runs")
}

func TestOrdersCorrelationDefaultsToEventID(t *testing.T) {
	t.Parallel()
	outs, err := Transform(Config{PaymentTopic: "p", ShippingTopic: "s"})(context.Background(), event(EventOrderCreated, `{"amount_cents":1}`))
	require.NoError(t, err)
	require.Equal(t, "p", outs[0].Topic)
	require.Equal(t, "0190f3c2-0000-7000-8000-000000000001", hdr(outs[0], envelope.HeaderCorrelationID))
	require.Equal(t, "o-1", string(outs[0].Key), "order id falls back to the aggregate id")
}

func TestOrdersOtherEventsAndRejects(t *testing.T) {
	t.Parallel()
	tf := Transform(Config{})
	outs, err := tf(context.Background(), event("order.cancelled", `{}`))
	require.NoError(t, err)
	require.Empty(t, outs)

	_, err = tf(context.Background(), event(EventOrderCreated, `{nope`))
	var syn *json.SyntaxError
	require.ErrorAs(t, err, &syn)

	noID := event(EventOrderCreated, `{}`)
	noID.Headers = noID.Headers[1:]
	_, err = tf(context.Background(), noID)
	require.ErrorIs(t, err, ErrNoEventID)
}
