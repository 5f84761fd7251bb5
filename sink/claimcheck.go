package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outboxrelay/outbox/claimcheck"
)

// errClaimCheckUnconfigured fails a record that carries a claim-check
// reference when the sink has no Config.ClaimCheck resolver.
var errClaimCheckUnconfigured = errors.New("sink: the event's payload is claim-checked but the sink has no ClaimCheck resolver (outbox sink --claim-check)")

// resolveAndCall replaces a claim-checked event's payload by the stored one
// and makes the call; the delivery keeps the small record, so retry copies
// and dead letters carry the reference, not the payload. A reference that
// cannot be resolved is a failed attempt that sent nothing.
func (s *Sink) resolveAndCall(ctx context.Context, e *Endpoint, d *delivery) callResult {
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
