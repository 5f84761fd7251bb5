package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/schema"
)

// errClaimCheckUnconfigured fails a record that carries a claim-check
// reference when the sink has no Config.ClaimCheck resolver.
var errClaimCheckUnconfigured = errors.New("sink: the event's payload is claim-checked but the sink has no ClaimCheck resolver (outbox sink --claim-check)")

// resolveAndCall replaces a claim-checked event's payload by the stored one
// and makes the call; the delivery keeps the small record, so retry copies
// and dead letters carry the reference, not the payload. A reference that
// cannot be resolved is a failed attempt that sent nothing.
func (s *Sink) resolveAndCall(ctx context.Context, e *Endpoint, d *delivery) callResult {
	if s.cfg.Decoder != nil && schema.IsWire(d.ev.Payload) {
		return s.decodeAndCall(ctx, e, d)
	}
	ref, ok, err := claimcheck.FromMap(d.ev.Headers)
	if !ok {
		return call(ctx, e, &d.ev)
	}
	started := time.Now()
	fail := func(err error, v verdict, class string) callResult {
		s.logger.WarnContext(ctx, "sink: claim-check payload unavailable", "event_id", d.ev.ID.String(), "ref", ref.URI, "error", err)
		return callResult{started: started, latency: time.Since(started), err: err, verdict: v, class: class}
	}
	if err != nil {
		return fail(err, verdictPermanent, "claim_check")
	}
	if s.cfg.ClaimCheck == nil {
		return fail(errClaimCheckUnconfigured, verdictPermanent, "claim_check_unconfigured")
	}
	rctx, cancel := e.ctxTimeout(ctx)
	payload, err := s.cfg.ClaimCheck.Resolve(rctx, ref)
	cancel()
	if err != nil {
		return fail(fmt.Errorf("sink: resolve claim-check payload: %w", err), verdictRetriable, "claim_check")
	}
	ev := d.ev
	ev.Payload = payload
	ev.Headers = make(map[string]string, len(d.ev.Headers))
	for k, v := range d.ev.Headers {
		if !claimcheck.IsHeader(k) {
			ev.Headers[k] = v
		}
	}
	return call(ctx, e, &ev)
}

// decodeAndCall decodes a value in the Confluent wire format back to the
// JSON the writer stored and makes the call with it (the relay never
// encodes a claim-checked event, so there is no reference to resolve). A
// registry that cannot answer is a retriable failure of class "schema"; a
// value that cannot be decoded is a permanent one. No call is made either way.
func (s *Sink) decodeAndCall(ctx context.Context, e *Endpoint, d *delivery) callResult {
	started := time.Now()
	rctx, cancel := e.ctxTimeout(ctx)
	payload, _, err := s.cfg.Decoder.Decode(rctx, d.ev.Payload)
	cancel()
	if err != nil {
		s.logger.WarnContext(ctx, "sink: cannot decode the value", "event_id", d.ev.ID.String(), "error", err)
		v := verdictPermanent
		if errors.Is(err, schema.ErrRegistry) {
			v = verdictRetriable
		}
		return callResult{started: started, latency: time.Since(started), err: fmt.Errorf("sink: decode value: %w", err), verdict: v, class: "schema"}
	}
	ev := d.ev
	ev.Payload = payload
	return call(ctx, e, &ev)
}
