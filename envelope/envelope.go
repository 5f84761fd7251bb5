// Package envelope is the event envelope every stage agrees on: the Kafka header
// names that carry an outbox row's fields from the writer through the relay, the
// eos transform and the sink, and the trace headers. It is the one package the
// stages share (as River shares rivertype), so outbox/, relay/, eos/ and sink/
// never import each other.
//
// A relayed Kafka record carries the row as key = aggregate_id, value = payload,
// and these headers.
package envelope

import (
	"fmt"
	"strings"
)

// Kafka header names written by the relay. Consumers read the event id from
// HeaderEventID and use it as the idempotency key all the way down.
const (
	HeaderEventID       = "event_id"
	HeaderAggregateType = "aggregate_type"
	HeaderAggregateID   = "aggregate_id"
	HeaderEventType     = "event_type"
	HeaderKind          = "kind"
	HeaderContentType   = "content_type"
	HeaderOccurredAt    = "occurred_at" // RFC 3339 with nanoseconds, UTC
	// HeaderSourceLSN is the commit LSN of the Postgres transaction ("16/B374D848").
	HeaderSourceLSN = "pg_lsn"
	// HeaderSourceXID is the Postgres transaction id.
	HeaderSourceXID = "pg_xid"
	// HeaderRepublished marks a record published by a repair (`outbox
	// republish`, or the relay filling a gap after slot loss) rather than
	// streamed from the WAL; its value is when (RFC 3339). Such a record
	// carries no HeaderSourceLSN value, and may reach a partition after
	// records of events that happened later: a consumer that needs order
	// compares HeaderOccurredAt.
	HeaderRepublished = "outbox.republished"
)

// Headers a writer takes from the request context and stores in the row's
// headers; the relay copies them to the record; eos and sink propagate them.
const (
	HeaderCorrelationID = "correlation_id"
	HeaderCausationID   = "causation_id"
	HeaderTraceparent   = "traceparent"
	HeaderTracestate    = "tracestate"
)

// Kinds of outbox row.
const (
	// KindEvent is a fact that happened; it goes to a topic with time retention.
	KindEvent = "event"
	// KindRecord is the latest state of an entity; it goes to a compacted topic
	// where Kafka keeps the newest copy per key.
	KindRecord = "record"
)

// ContentTypeJSON is the default content type of a payload.
const ContentTypeJSON = "application/json"

// DefaultTopic derives a topic from an aggregate type when a row names none:
// "Order" -> "outbox.order", "order_line" -> "outbox.order_line". The relay makes
// the template configurable; this is its default.
func DefaultTopic(aggregateType string) string {
	return "outbox." + TopicSafe(aggregateType)
}

// TopicSafe lowercases s and replaces characters Kafka does not allow in topic
// names ([a-zA-Z0-9._-]) with '_'.
func TopicSafe(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// ValidTopic reports whether name is a legal Kafka topic name.
func ValidTopic(name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("envelope: topic name %q is not allowed", name)
	}
	if len(name) > 249 {
		return fmt.Errorf("envelope: topic name %q is longer than 249 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("envelope: topic name %q has %q; Kafka allows only [a-zA-Z0-9._-]", name, r)
		}
	}
	return nil
}
