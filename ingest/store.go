package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/outbox"
	"github.com/outboxrelay/outbox/sql"
)

// Headers ingest adds to the events it writes (and the relay carries to Kafka).
const (
	// HeaderSource is the source's name.
	HeaderSource = "webhook_source"
	// HeaderDeliveryID is the provider's event id.
	HeaderDeliveryID = "webhook_delivery_id"
	// HeaderOutcome is "accepted", "stale" (a raw webhook not newer than the
	// entity's accepted version: no record was written) or "unmapped" (a
	// raw-only source).
	HeaderOutcome = "webhook_outcome"
	// HeaderEntity is the record key SOURCE.TYPE.ID.
	HeaderEntity = "webhook_entity"
	// HeaderVersion is the delivery's version (0 when the source orders by
	// updated_at only).
	HeaderVersion = "webhook_version"
	// HeaderUpdatedAt is the delivery's updated_at, RFC 3339, when mapped.
	HeaderUpdatedAt = "webhook_updated_at"
)

// AggregateTypeWebhook is the aggregate type of raw webhook events.
const AggregateTypeWebhook = "webhook"

// EventTypeReceived is the event type of a raw webhook of a raw-only source.
const EventTypeReceived = "webhook.received"

// store runs the delivery's one transaction: the version check (mapped
// sources), then the idempotency key's claim with the events and the
// answer, then COMMIT. The version check goes first so that a redelivery
// racing the original waits on the entity's row lock and then finds the
// original's key committed: it replays instead of answering 409.
func (h *Handler) store(ctx context.Context, src *Source, d *delivery, body []byte) (outbox.Response, string, error) {
	tx, err := h.cfg.Pool.Begin(ctx)
	if err != nil {
		return outbox.Response{}, "", fmt.Errorf("ingest: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	outcome := outcomeAccepted
	if d.mapped {
		_, err := h.q.AcceptWebhookVersion(ctx, sql.InSchema(tx, h.cfg.Schema), sql.AcceptWebhookVersionParams{
			Source: src.Name, EntityType: d.entityType, EntityID: d.entityID, Version: d.version,
			UpdatedAt: d.updatedAt, DeliveryID: d.id,
		})
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			outcome = outcomeStale
		case err != nil:
			return outbox.Response{}, "", fmt.Errorf("ingest: version check: %w", err)
		}
	}
	resp, err := response(src, d, outcome)
	if err != nil {
		return outbox.Response{}, "", err
	}
	key := outbox.Key{Scope: "webhook:" + src.Name, Key: d.id}
	claim, _, err := h.writer.ClaimAndWrite(ctx, tx, key, outbox.Fingerprint(body), &resp, events(src, d, body, outcome, h.cfg.Now())...)
	if err != nil {
		return outbox.Response{}, "", fmt.Errorf("ingest: write delivery: %w", err)
	}
	if claim.Replay != nil {
		// Nothing of this transaction may commit: the version check ran for
		// a delivery that was already written.
		return *claim.Replay, outcomeDuplicate, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return outbox.Response{}, "", fmt.Errorf("ingest: commit: %w", err)
	}
	return resp, outcome, nil
}

// response is the 200 answer stored with the key and replayed to redeliveries.
func response(src *Source, d *delivery, outcome string) (outbox.Response, error) {
	a := answer{Outcome: outcome, Source: src.Name, DeliveryID: d.id}
	if d.mapped {
		a.Entity = d.entityKey(src.Name)
		if d.hasVersion {
			v := d.version
			a.Version = &v
		}
		if d.updatedAt != nil {
			a.UpdatedAt = d.updatedAt.UTC().Format(time.RFC3339Nano)
		}
		if outcome == outcomeStale {
			a.Detail = "an equal or newer version of " + a.Entity + " was accepted before; kept as a raw webhook marked stale, no record written"
		}
	}
	b, err := marshalJSON(a)
	if err != nil {
		return outbox.Response{}, fmt.Errorf("ingest: encode answer: %w", err)
	}
	return outbox.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       append(b, '\n'),
	}, nil
}

// events are the outbox rows of a delivery: always the raw webhook; for an
// accepted mapped delivery also the entity's record (its state, compacted
// per key) and a right-sized event saying what changed.
func events(src *Source, d *delivery, body []byte, outcome string, now time.Time) []outbox.Event {
	headers := map[string]string{HeaderSource: src.Name, HeaderDeliveryID: d.id}
	raw := outbox.Event{
		AggregateType: AggregateTypeWebhook, AggregateID: d.id, EventType: EventTypeReceived,
		Topic: src.Topics.Raw, Kind: outbox.KindEvent, ContentType: d.contentType, Payload: body, OccurredAt: now,
	}
	if !d.mapped {
		headers[HeaderOutcome] = "unmapped"
		raw.Headers = headers
		return []outbox.Event{raw}
	}
	key := d.entityKey(src.Name)
	headers[HeaderOutcome] = outcome
	headers[HeaderEntity] = key
	headers[HeaderVersion] = strconv.FormatInt(d.version, 10)
	occurred := now
	if d.updatedAt != nil {
		headers[HeaderUpdatedAt] = d.updatedAt.UTC().Format(time.RFC3339Nano)
		occurred = *d.updatedAt
	}
	raw.AggregateID, raw.EventType, raw.Headers = key, d.eventType, headers
	if outcome != outcomeAccepted {
		return []outbox.Event{raw}
	}
	fact, _ := marshalJSON(map[string]any{
		"source": src.Name, "delivery_id": d.id, "event_type": d.eventType,
		"entity_type": d.entityType, "entity_id": d.entityID, "version": d.version, "updated_at": headers[HeaderUpdatedAt],
	})
	return []outbox.Event{
		raw,
		{
			AggregateType: d.entityType, AggregateID: key, EventType: d.eventType, Topic: src.Topics.Records,
			Kind: outbox.KindRecord, ContentType: envelope.ContentTypeJSON, Payload: d.object, Headers: headers, OccurredAt: occurred,
		},
		{
			AggregateType: d.entityType, AggregateID: key, EventType: d.eventType, Topic: src.Topics.Events,
			Kind: outbox.KindEvent, ContentType: envelope.ContentTypeJSON, Payload: fact, Headers: headers, OccurredAt: occurred,
		},
	}
}
