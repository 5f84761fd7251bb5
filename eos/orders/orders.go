// Package orders is the transform the outbox binary ships (`outbox transform
// --transform orders`): each order.created event becomes two commands,
// payment.requested and shipping.requested, for the sink to carry to the
// payment and shipping APIs. It is also the example of a TransformFunc users
// write for their own events.
//
// Commands carry the envelope headers: a fresh event_id derived from the input
// event id (UUIDv5, so a re-run after an aborted transaction, or a replay,
// yields the same id and the sink's idempotency key holds), the input's
// correlation id (or its event id when it had none), causation_id = the input
// event id, and the W3C trace context unchanged.
package orders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
)

// Event and command types.
const (
	EventOrderCreated       = "order.created"
	CommandPaymentRequested = "payment.requested"
	CommandShippingRequest  = "shipping.requested"
)

// Config names where the commands go.
type Config struct {
	// PaymentTopic receives payment.requested. Defaults to "commands.payment".
	PaymentTopic string
	// ShippingTopic receives shipping.requested. Defaults to "commands.shipping".
	ShippingTopic string
}

// ErrNoEventID rejects an input without an event_id header: its commands
// could not get a stable id.
var ErrNoEventID = errors.New("orders: record has no event_id header")

// ErrMissingField rejects an order.created payload without a required field.
var ErrMissingField = errors.New("orders: order.created payload misses a required field")

// OrderCreated is the part of an order.created payload the commands need.
// Unknown fields are ignored.
type OrderCreated struct {
	OrderID     string          `json:"order_id"`
	CustomerID  string          `json:"customer_id"`
	AmountCents int64           `json:"amount_cents"`
	Currency    string          `json:"currency"`
	Items       json.RawMessage `json:"items,omitempty"`
	Address     json.RawMessage `json:"shipping_address,omitempty"`
}

// PaymentRequested is the payment.requested command payload.
type PaymentRequested struct {
	OrderID     string `json:"order_id"`
	CustomerID  string `json:"customer_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
}

// ShippingRequested is the shipping.requested command payload.
type ShippingRequested struct {
	OrderID    string          `json:"order_id"`
	CustomerID string          `json:"customer_id"`
	Items      json.RawMessage `json:"items,omitempty"`
	Address    json.RawMessage `json:"shipping_address,omitempty"`
}

// namespace seeds the UUIDv5 command ids.
var namespace = uuid.MustParse("6f1c7c1e-4a5e-5b2e-9d0e-0b7c0e0a7e11")

// CommandID is the event id of the command of type typ caused by event id in.
func CommandID(in, typ string) string {
	return uuid.NewSHA1(namespace, []byte(in+"/"+typ)).String()
}

// Transform returns the orders transform. Events other than order.created are
// consumed and produce nothing; an undecodable payload, or one without
// order_id, is an error (the stage dead-letters it).
func Transform(cfg Config) func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
	if cfg.PaymentTopic == "" {
		cfg.PaymentTopic = "commands.payment"
	}
	if cfg.ShippingTopic == "" {
		cfg.ShippingTopic = "commands.shipping"
	}
	return func(_ context.Context, r *kgo.Record) ([]*kgo.Record, error) {
		h := headers(r)
		if h[envelope.HeaderEventType] != EventOrderCreated {
			return nil, nil
		}
		eventID := h[envelope.HeaderEventID]
		if eventID == "" {
			return nil, ErrNoEventID
		}
		var o OrderCreated
		if err := json.Unmarshal(r.Value, &o); err != nil {
			return nil, fmt.Errorf("orders: decode order.created %s: %w", eventID, err)
		}
		if o.OrderID == "" {
			o.OrderID = h[envelope.HeaderAggregateID]
		}
		if o.OrderID == "" {
			return nil, fmt.Errorf("%w: order_id (event %s)", ErrMissingField, eventID)
		}
		pay, err := json.Marshal(PaymentRequested{o.OrderID, o.CustomerID, o.AmountCents, o.Currency})
		if err != nil {
			return nil, err
		}
		ship, err := json.Marshal(ShippingRequested{o.OrderID, o.CustomerID, o.Items, o.Address})
		if err != nil {
			return nil, err
		}
		return []*kgo.Record{
			command(r, h, cfg.PaymentTopic, CommandPaymentRequested, o.OrderID, pay),
			command(r, h, cfg.ShippingTopic, CommandShippingRequest, o.OrderID, ship),
		}, nil
	}
}

func headers(r *kgo.Record) map[string]string {
	m := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func command(in *kgo.Record, h map[string]string, topic, typ, orderID string, payload []byte) *kgo.Record {
	eventID := h[envelope.HeaderEventID]
	correlation := h[envelope.HeaderCorrelationID]
	if correlation == "" {
		correlation = eventID
	}
	occurred := h[envelope.HeaderOccurredAt]
	if occurred == "" {
		occurred = in.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	hs := []kgo.RecordHeader{
		{Key: envelope.HeaderEventID, Value: []byte(CommandID(eventID, typ))},
		{Key: envelope.HeaderAggregateType, Value: []byte("order")},
		{Key: envelope.HeaderAggregateID, Value: []byte(orderID)},
		{Key: envelope.HeaderEventType, Value: []byte(typ)},
		{Key: envelope.HeaderKind, Value: []byte(envelope.KindEvent)},
		{Key: envelope.HeaderContentType, Value: []byte(envelope.ContentTypeJSON)},
		{Key: envelope.HeaderOccurredAt, Value: []byte(occurred)},
		{Key: envelope.HeaderCorrelationID, Value: []byte(correlation)},
		{Key: envelope.HeaderCausationID, Value: []byte(eventID)},
	}
	for _, k := range []string{envelope.HeaderTraceparent, envelope.HeaderTracestate} {
		if v, ok := h[k]; ok {
			hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	return &kgo.Record{Topic: topic, Key: []byte(orderID), Value: payload, Headers: hs}
}
