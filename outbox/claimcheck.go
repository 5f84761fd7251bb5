package outbox

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/outboxrelay/outbox/sql"
)

// claimChecked reports whether e's payload goes to the claim-check store:
// claim-check is on and the event is marked or over the threshold.
func (w *Writer) claimChecked(e *Event) bool {
	cc := w.cfg.ClaimCheck
	return cc.Store != nil && (e.ClaimCheck || len(e.Payload) > cc.Threshold)
}

// needsClaimCheck reports whether any of events goes to the store.
func (w *Writer) needsClaimCheck(events []Event) bool {
	for i := range events {
		if w.claimChecked(&events[i]) {
			return true
		}
	}
	return false
}

// putClaims stores the payload of every claim-checked event through db (the
// caller's transaction, or the batch queueing into it) and replaces it in p
// with the reference's stub, adding the reference headers. p holds validated
// events with their ids.
func (w *Writer) putClaims(ctx context.Context, db sql.DBTX, events []Event, p *sql.InsertEventsParams) error {
	for i := range events {
		e := &events[i]
		if !w.claimChecked(e) {
			continue
		}
		ref, err := w.cfg.ClaimCheck.Store.Put(ctx, db, p.EventIds[i], p.Payloads[i])
		if err != nil {
			return fmt.Errorf("outbox: event %d: claim-check: %w", i, dbError(err))
		}
		h := map[string]string{}
		if err := json.Unmarshal(p.Headers[i], &h); err != nil {
			return fmt.Errorf("outbox: event %d: claim-check: headers: %w", i, err)
		}
		for k, v := range ref.Headers() {
			h[k] = v
		}
		if p.Headers[i], err = json.Marshal(h); err != nil {
			return fmt.Errorf("outbox: event %d: claim-check: headers: %w", i, err)
		}
		p.Payloads[i] = ref.Stub()
	}
	return nil
}
