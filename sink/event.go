package sink

import (
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
)

// Headers the sink adds to records it re-publishes to retry tier topics.
const (
	// HeaderRetryAttempt is the attempt number the retry copy is for.
	HeaderRetryAttempt = "outbox.sink.attempt"
	// HeaderRetryDue is when the retry copy is due (RFC 3339, UTC).
	HeaderRetryDue = "outbox.sink.due"
	// HeaderOriginTopic, HeaderOriginPartition and HeaderOriginOffset say where
	// a retry copy's event was first consumed.
	HeaderOriginTopic     = "outbox.sink.origin.topic"
	HeaderOriginPartition = "outbox.sink.origin.partition"
	HeaderOriginOffset    = "outbox.sink.origin.offset"
)

// Event is what a RequestBuilder sees of a record.
type Event struct {
	// ID is the event id (UUIDv7), also the Idempotency-Key sent.
	ID uuid.UUID
	// Key is the Kafka key (the aggregate id).
	Key []byte
	// Payload is the record value.
	Payload []byte
	// Headers are the record's headers; the last value of a repeated key wins.
	Headers map[string]string
	// EventType, AggregateType and AggregateID come from the envelope headers.
	EventType, AggregateType, AggregateID string
	// Topic, Partition and Offset say where the event was first consumed (the
	// source topic, also for retry copies).
	Topic     string
	Partition int32
	Offset    int64
	// Timestamp is the record's timestamp.
	Timestamp time.Time
	// Attempt is the attempt number of this call, from 1.
	Attempt int
}

// IdempotencyKey is the Idempotency-Key the sink sends for the event.
func (e *Event) IdempotencyKey() string { return e.ID.String() }

// delivery is one consumed record and what the sink read from it.
type delivery struct {
	rec      *kgo.Record
	ev       Event
	expected int       // attempt this delivery is for: 1 for the source record
	due      time.Time // retry copies: when they may be called
	validID  bool
	replays  int32 // outbox.dlt.replay_count: how many times `outbox dlq replay` sent it back
}

func newDelivery(rec *kgo.Record) *delivery {
	d := &delivery{rec: rec, expected: 1}
	h := make(map[string]string, len(rec.Headers))
	for _, kv := range rec.Headers {
		h[kv.Key] = string(kv.Value)
	}
	if n, err := strconv.Atoi(h[envelope.HeaderReplayCount]); err == nil && n > 0 {
		d.replays = int32(n)
	}
	d.ev = Event{
		Key:           rec.Key,
		Payload:       rec.Value,
		Headers:       h,
		EventType:     h[envelope.HeaderEventType],
		AggregateType: h[envelope.HeaderAggregateType],
		AggregateID:   h[envelope.HeaderAggregateID],
		Topic:         rec.Topic,
		Partition:     rec.Partition,
		Offset:        rec.Offset,
		Timestamp:     rec.Timestamp,
	}
	if id, err := uuid.Parse(h[envelope.HeaderEventID]); err == nil && id != uuid.Nil {
		d.ev.ID, d.validID = id, true
	}
	if v, ok := h[HeaderRetryAttempt]; ok {
		if n, err := strconv.Atoi(v); err == nil && n > 1 {
			d.expected = n
		}
		d.due, _ = time.Parse(time.RFC3339Nano, h[HeaderRetryDue])
		d.ev.Topic = h[HeaderOriginTopic]
		if p, err := strconv.ParseInt(h[HeaderOriginPartition], 10, 32); err == nil {
			d.ev.Partition = int32(p)
		}
		d.ev.Offset, _ = strconv.ParseInt(h[HeaderOriginOffset], 10, 64)
	}
	return d
}

// isSinkHeader reports headers the sink itself manages on retry copies.
func isSinkHeader(k string) bool {
	switch k {
	case HeaderRetryAttempt, HeaderRetryDue, HeaderOriginTopic, HeaderOriginPartition, HeaderOriginOffset:
		return true
	}
	return false
}
