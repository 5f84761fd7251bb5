package orders_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/eos"
	"github.com/outboxrelay/outbox/eos/orders"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(kafkatest.M(m)) }

// TestOrdersThroughStage runs the shipped transform in a stage: order.created
// events become one payment and one shipping command each, other events vanish,
// a broken payload is dead-lettered.
func TestOrdersThroughStage(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	in := k.Topic("outbox.order", 2, nil)
	pay := k.Topic("commands.payment", 2, nil)
	ship := k.Topic("commands.shipping", 2, nil)
	dlq := k.Topic("transform.dlq", 1, nil)

	cl, err := kgo.NewClient(append(k.Opts(), kgo.DefaultProduceTopic(in))...)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var recs []*kgo.Record
	for i := range 20 {
		typ, payload := orders.EventOrderCreated, fmt.Sprintf(`{"order_id":"o-%d","amount_cents":%d,"currency":"EUR"}`, i, 100+i)
		switch {
		case i%5 == 4:
			typ = "order.paid"
		case i == 7:
			payload = `{"order_id":`
		}
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprintf("o-%d", i)), Value: []byte(payload), Headers: []kgo.RecordHeader{
			{Key: envelope.HeaderEventID, Value: []byte(fmt.Sprintf("ev-%d", i))},
			{Key: envelope.HeaderEventType, Value: []byte(typ)},
			{Key: envelope.HeaderCorrelationID, Value: []byte("corr")},
		}})
	}
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
	cl.Close()

	s, err := eos.New(eos.Config{
		KafkaOpts:       k.Opts(),
		Group:           "orders-" + in,
		InputTopics:     []string{in},
		DeadLetterTopic: dlq,
		TransactionalID: "orders-" + in,
		Transform:       orders.Transform(orders.Config{PaymentTopic: pay, ShippingTopic: ship}),
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	defer func() { require.NoError(t, s.Stop(ctx)) }()

	// 20 events: 4 order.paid (ignored), 1 broken, 15 order.created.
	var pays, ships, dead []*kgo.Record
	require.Eventually(t, func() bool {
		pays, _ = k.ReadCommitted(ctx, pay)
		ships, _ = k.ReadCommitted(ctx, ship)
		dead, _ = k.ReadCommitted(ctx, dlq)
		return len(pays) == 15 && len(ships) == 15 && len(dead) == 1
	}, 45*time.Second, 200*time.Millisecond)
	for _, r := range append(pays, ships...) {
		hs := map[string]string{}
		for _, h := range r.Headers {
			hs[h.Key] = string(h.Value)
		}
		require.Equal(t, "corr", hs[envelope.HeaderCorrelationID])
		require.Equal(t, "ev-"+string(r.Key)[2:], hs[envelope.HeaderCausationID])
	}
	d := envelope.ParseDeadLetter(func() []envelope.Header {
		out := make([]envelope.Header, len(dead[0].Headers))
		for i, h := range dead[0].Headers {
			out[i] = envelope.Header(h)
		}
		return out
	}())
	require.Equal(t, "*json.SyntaxError", d.ErrorClass)
	require.Equal(t, `{"order_id":`, string(dead[0].Value))
}
