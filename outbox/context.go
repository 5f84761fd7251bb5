package outbox

import (
	"context"

	"go.opentelemetry.io/otel/propagation"

	"github.com/outboxrelay/outbox/envelope"
)

type ctxKey int

const (
	correlationKey ctxKey = iota
	causationKey
)

// WithCorrelationID returns ctx carrying the correlation id that Write puts in
// every event's headers; an order handler sets it from the request (or its
// X-Correlation-ID header).
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey, id)
}

// WithCausationID returns ctx carrying the id of the message that caused the
// events written under it (for a command handler: the command's event id).
func WithCausationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, causationKey, id)
}

// CorrelationID returns the correlation id in ctx, or "".
func CorrelationID(ctx context.Context) string {
	s, _ := ctx.Value(correlationKey).(string)
	return s
}

// CausationID returns the causation id in ctx, or "".
func CausationID(ctx context.Context) string {
	s, _ := ctx.Value(causationKey).(string)
	return s
}

// contextHeaders collects trace context and ids from ctx.
func (w *Writer) contextHeaders(ctx context.Context) map[string]string {
	h := map[string]string{}
	w.cfg.Propagator.Inject(ctx, propagation.MapCarrier(h))
	if id := CorrelationID(ctx); id != "" {
		h[envelope.HeaderCorrelationID] = id
	}
	if id := CausationID(ctx); id != "" {
		h[envelope.HeaderCausationID] = id
	}
	return h
}
