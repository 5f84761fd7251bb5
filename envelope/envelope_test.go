package envelope_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/envelope"
)

func TestDeadLetterRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	d := envelope.DeadLetter{
		OriginTopic: "outbox.order", OriginPartition: 3, OriginOffset: 42, OriginTimestamp: at.Add(-time.Minute),
		Group: "orders-transform", Stage: "transform", StageName: "orders", ErrorClass: "*json.SyntaxError",
		ErrorMessage: "unexpected end of JSON input", Attempt: 4, At: at,
		History: []envelope.Attempt{{N: 1, At: at, Status: 503, Error: "unavailable", LatencyMS: 12}},
	}
	got := envelope.ParseDeadLetter(d.Headers())
	require.Equal(t, d.OriginTopic, got.OriginTopic)
	require.Equal(t, d.OriginPartition, got.OriginPartition)
	require.Equal(t, d.OriginOffset, got.OriginOffset)
	require.True(t, d.OriginTimestamp.Equal(got.OriginTimestamp))
	require.Equal(t, d.History, got.History)
	require.Equal(t, d.Attempt, got.Attempt)
	require.True(t, at.Equal(got.At))

	// Both the Kafka Connect and the Spring names are written.
	keys := map[string]string{}
	for _, h := range d.Headers() {
		keys[h.Key] = string(h.Value)
	}
	require.Equal(t, "outbox.order", keys["__connect.errors.topic"])
	require.Equal(t, "outbox.order", keys["kafka_dlt-original-topic"])
	require.Equal(t, "orders-transform", keys["kafka_dlt-original-consumer-group"])

	// A zero origin timestamp is left out rather than written as year 1.
	for _, h := range (envelope.DeadLetter{}).Headers() {
		require.NotEqual(t, envelope.HeaderSpringOriginTimestamp, h.Key)
	}
}

func TestTopics(t *testing.T) {
	t.Parallel()
	require.Equal(t, "outbox.order_line", envelope.DefaultTopic("Order Line"))
	require.NoError(t, envelope.ValidTopic("outbox.order"))
	require.Error(t, envelope.ValidTopic("orders/created"))
	require.Error(t, envelope.ValidTopic(".."))
}
