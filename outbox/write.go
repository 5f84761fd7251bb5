package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/sql"
)

// Kind says how Kafka keeps an event.
type Kind string

const (
	// KindEvent is a fact; it goes to a topic with time retention. The default.
	KindEvent Kind = envelope.KindEvent
	// KindRecord is an entity's latest state; it goes to a compacted topic.
	KindRecord Kind = envelope.KindRecord
)

// Event is one outbox row. Keep events right-sized: the facts the event owns
// plus stable ids, not whole foreign objects.
type Event struct {
	// ID is the event id, the idempotency key all the way down. Defaults to a
	// new UUIDv7; a caller-supplied id must be a UUIDv7.
	ID uuid.UUID
	// AggregateType names the kind of entity, e.g. "order". Required.
	AggregateType string
	// AggregateID identifies the entity and is the Kafka key: every event of one
	// aggregate lands in one partition, in commit order. Required.
	AggregateID string
	// EventType names what happened, e.g. "order.created". Required.
	EventType string
	// Topic routes the event. Defaults to the relay's template applied to
	// AggregateType ("outbox.order").
	Topic string
	// FanoutTopics also receive the event.
	FanoutTopics []string
	// Kind is KindEvent (default) or KindRecord.
	Kind Kind
	// ContentType of Payload. Defaults to "application/json", which is validated.
	ContentType string
	// Payload is the event body.
	Payload []byte
	// Headers travel with the event to Kafka. Trace context, correlation and
	// causation ids from ctx are added unless set here.
	Headers map[string]string
	// OccurredAt is when the fact happened. Defaults to now.
	OccurredAt time.Time
	// ClaimCheck sends the payload to Config.ClaimCheck's store whatever its
	// size (an event with an attachment). Defaults to false: only payloads over
	// the threshold go there.
	ClaimCheck bool
}

// Write inserts events into the outbox in tx, in one statement (one round trip
// however many events), and returns their ids in order. It validates every
// event first: on a validation error nothing is written and tx stays usable.
// See the package doc for what commit and rollback mean.
func (w *Writer) Write(ctx context.Context, tx pgx.Tx, events ...Event) ([]uuid.UUID, error) {
	var ids []uuid.UUID
	if err := w.write(ctx, tx, events, &ids); err != nil {
		return nil, err
	}
	return ids, nil
}

// write validates events and inserts them through db (a transaction, or a
// batch recorder), setting *ids once they are known.
func (w *Writer) write(ctx context.Context, db sql.DBTX, events []Event, ids *[]uuid.UUID) error {
	if len(events) == 0 {
		return ErrNoEvents
	}
	p, err := w.eventParams(ctx, events)
	if err != nil {
		return err
	}
	if err := w.putClaims(ctx, db, events, &p); err != nil {
		return err
	}
	if len(events) == 1 {
		err := w.q.InsertEvent(ctx, w.db(db), sql.InsertEventParams{
			EventID: p.EventIds[0], AggregateType: p.AggregateTypes[0], AggregateID: p.AggregateIds[0],
			EventType: p.EventTypes[0], Topic: p.Topics[0], FanoutTopics: nonNil(events[0].FanoutTopics),
			Kind: p.Kinds[0], ContentType: p.ContentTypes[0], Payload: p.Payloads[0], Headers: p.Headers[0],
			OccurredAt: p.OccurredAts[0],
		})
		if err != nil {
			return fmt.Errorf("outbox: insert event: %w", dbError(err))
		}
		*ids = p.EventIds
		return nil
	}
	if err := w.q.InsertEvents(ctx, w.db(db), p); err != nil {
		return fmt.Errorf("outbox: insert %d events: %w", len(events), dbError(err))
	}
	*ids = p.EventIds
	return nil
}

// eventParams validates events (none is fine) and returns them as the
// columns of the multi-event insert, ids and defaults filled in.
func (w *Writer) eventParams(ctx context.Context, events []Event) (sql.InsertEventsParams, error) {
	p := sql.InsertEventsParams{
		EventIds:       make([]uuid.UUID, len(events)),
		AggregateTypes: make([]string, len(events)),
		AggregateIds:   make([]string, len(events)),
		EventTypes:     make([]string, len(events)),
		Topics:         make([]string, len(events)),
		Fanouts:        make([][]byte, len(events)),
		Kinds:          make([]string, len(events)),
		ContentTypes:   make([]string, len(events)),
		Payloads:       make([][]byte, len(events)),
		Headers:        make([][]byte, len(events)),
		OccurredAts:    make([]time.Time, len(events)),
	}
	if len(events) == 0 {
		return p, nil
	}
	now := w.cfg.Now()
	ctxHeaders := w.contextHeaders(ctx)
	for i := range events {
		e := &events[i]
		if err := w.validate(i, e); err != nil {
			return p, err
		}
		id := e.ID
		if id == uuid.Nil {
			var err error
			if id, err = uuid.NewV7(); err != nil {
				return p, fmt.Errorf("outbox: new event id: %w", err)
			}
		}
		p.EventIds[i] = id
		headers, err := w.headers(i, e, ctxHeaders, p.EventIds[0])
		if err != nil {
			return p, err
		}
		fanout, _ := json.Marshal(nonNil(e.FanoutTopics))
		p.AggregateTypes[i] = e.AggregateType
		p.AggregateIds[i] = e.AggregateID
		p.EventTypes[i] = e.EventType
		p.Topics[i] = e.Topic
		p.Fanouts[i] = fanout
		p.Kinds[i] = string(orDefault(e.Kind, KindEvent))
		p.ContentTypes[i] = orDefault(e.ContentType, envelope.ContentTypeJSON)
		p.Payloads[i] = nonNilBytes(e.Payload)
		p.Headers[i] = headers
		p.OccurredAts[i] = orNow(e.OccurredAt, now)
	}
	return p, nil
}

func (w *Writer) validate(i int, e *Event) error {
	verr := func(field string, err error, detail string) error {
		return &ValidationError{Index: i, Field: field, Err: err, Detail: detail}
	}
	switch {
	case strings.TrimSpace(e.AggregateType) == "":
		return verr("AggregateType", ErrMissingAggregateType, "")
	case strings.TrimSpace(e.AggregateID) == "":
		return verr("AggregateID", ErrMissingAggregateID, "")
	case strings.TrimSpace(e.EventType) == "":
		return verr("EventType", ErrMissingEventType, "")
	}
	if e.ID != uuid.Nil && e.ID.Version() != 7 {
		return verr("ID", ErrInvalidEventID, fmt.Sprintf("%s is version %d", e.ID, e.ID.Version()))
	}
	if e.Kind != "" && e.Kind != KindEvent && e.Kind != KindRecord {
		return verr("Kind", ErrInvalidKind, fmt.Sprintf("%q; use %q or %q", e.Kind, KindEvent, KindRecord))
	}
	if e.Topic != "" {
		if err := envelope.ValidTopic(e.Topic); err != nil {
			return verr("Topic", ErrInvalidTopic, err.Error())
		}
	}
	for _, t := range e.FanoutTopics {
		if err := envelope.ValidTopic(t); err != nil {
			return verr("FanoutTopics", ErrInvalidTopic, err.Error())
		}
	}
	if e.ClaimCheck && w.cfg.ClaimCheck.Store == nil {
		return verr("ClaimCheck", ErrClaimCheckOff, "")
	}
	if w.claimChecked(e) {
		if len(e.Payload) > w.cfg.ClaimCheck.MaxBytes {
			return verr("Payload", ErrPayloadTooLarge, fmt.Sprintf("%d bytes, claim-check limit %d", len(e.Payload), w.cfg.ClaimCheck.MaxBytes))
		}
	} else if len(e.Payload) > w.cfg.MaxPayloadBytes {
		return verr("Payload", ErrPayloadTooLarge, fmt.Sprintf("%d bytes, limit %d", len(e.Payload), w.cfg.MaxPayloadBytes))
	}
	if isJSON(orDefault(e.ContentType, envelope.ContentTypeJSON)) && !(utf8.Valid(e.Payload) && json.Valid(e.Payload)) {
		return verr("Payload", ErrInvalidJSON, "content type "+orDefault(e.ContentType, envelope.ContentTypeJSON))
	}
	if w.cfg.Schemas != nil {
		if err := w.cfg.Schemas.Validate(e.EventType, e.Payload); err != nil {
			return verr("Payload", err, "")
		}
	}
	return nil
}

// isJSON reports whether a content type is JSON: application/json or any
// structured-syntax +json type (application/cloudevents+json), in any case,
// whatever its parameters. The events_validate trigger of migration 00003
// reads content types by the same rule, so both paths validate the same rows.
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// headers merges the event's own headers over those from ctx, defaulting the
// correlation id to the first event of the write, and checks the size.
func (w *Writer) headers(i int, e *Event, fromCtx map[string]string, firstID uuid.UUID) ([]byte, error) {
	h := make(map[string]string, len(fromCtx)+len(e.Headers)+1)
	for k, v := range fromCtx {
		h[k] = v
	}
	for k, v := range e.Headers {
		h[k] = v
	}
	if h[envelope.HeaderCorrelationID] == "" {
		// The write starts a correlation when the request carried none.
		h[envelope.HeaderCorrelationID] = firstID.String()
	}
	size := 0
	for k, v := range h {
		size += len(k) + len(v)
	}
	if size > w.cfg.MaxHeaderBytes {
		return nil, &ValidationError{Index: i, Field: "Headers", Err: ErrHeadersTooLarge, Detail: fmt.Sprintf("%d bytes, limit %d", size, w.cfg.MaxHeaderBytes)}
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("outbox: event %d: encode headers: %w", i, err)
	}
	return b, nil
}

func orDefault[T ~string](v, def T) T {
	if v == "" {
		return def
	}
	return v
}

func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
