// Package deadletter reads dead-letter topics and replays chosen records to
// their origin topic or to a retry tier: `outbox dlq list|show|replay` sit on
// it. It reads the dead-letter headers of the envelope package (Kafka Connect
// and Spring names), so it works on any stage's dead letters, and it never
// imports a stage.
//
// Replay is exactly-once per dead letter: each replayed record is produced in
// a Kafka transaction together with an entry in a compacted replay ledger
// topic, keyed by the dead letter's position. A rerun (after success or after a
// crash) first fences any predecessor with the same transactional id, then
// reads the ledger with read_committed and skips what is already replayed.
package deadletter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
)

// HeaderReplayedFrom names the dead letter a replayed or quarantined record
// came from: "topic/partition/offset".
const HeaderReplayedFrom = "outbox.dlt.replayed_from"

// ErrNotFound is returned by Get when no committed record sits at the position.
var ErrNotFound = errors.New("deadletter: no such record")

// ErrTopicNotFound is returned by Read, List, Get and Replay when the
// dead-letter topic does not exist: no dead letters were ever written (the
// stages create nothing), or a wrong topic name. The error names the topic
// and also matches kerr.UnknownTopicOrPartition. Replay returns it only for
// ReplayConfig.Topic; a missing ledger topic is an error of its own.
var ErrTopicNotFound = errors.New("deadletter: topic does not exist")

// topicNotFoundError is ErrTopicNotFound for one topic.
type topicNotFoundError struct{ topic string }

func (e *topicNotFoundError) Error() string {
	return "deadletter: topic " + e.topic + " does not exist"
}

func (e *topicNotFoundError) Unwrap() []error {
	return []error{ErrTopicNotFound, kerr.UnknownTopicOrPartition}
}

// ledgerNotFoundError is Replay's error for a missing replay ledger topic. It
// matches kerr.UnknownTopicOrPartition, and not ErrTopicNotFound, which names
// the dead-letter topic; its message leaves out the broker's error text,
// which reads as if the dead-letter topic were the one missing.
type ledgerNotFoundError struct{ topic string }

func (e *ledgerNotFoundError) Error() string {
	return "deadletter: replay ledger topic " + e.topic + " does not exist: create it (kind replay_ledger in topics.yaml, then outbox topics apply)"
}

func (e *ledgerNotFoundError) Unwrap() error { return kerr.UnknownTopicOrPartition }

// Letter is a dead-lettered record as read back.
type Letter struct {
	// Record is the record in the dead-letter topic.
	Record *kgo.Record
	// DeadLetter is the decoded dead-letter headers.
	DeadLetter envelope.DeadLetter
	// EventID is the envelope's event_id header, the idempotency key.
	EventID string
	// ReplayCount is how many times `outbox dlq replay` replayed this event.
	ReplayCount int
}

// Decode reads a dead-letter record's headers.
func Decode(r *kgo.Record) Letter {
	hs := make([]envelope.Header, len(r.Headers))
	l := Letter{Record: r}
	for i, h := range r.Headers {
		hs[i] = envelope.Header(h)
		switch h.Key {
		case envelope.HeaderEventID:
			l.EventID = string(h.Value)
		case envelope.HeaderReplayCount:
			l.ReplayCount, _ = strconv.Atoi(string(h.Value))
		}
	}
	l.DeadLetter = envelope.ParseDeadLetter(hs)
	return l
}

// Position returns where the letter sits in its topic.
func (l Letter) Position() Position {
	return Position{Partition: l.Record.Partition, Offset: l.Record.Offset}
}

// At is when the record was dead-lettered: the outbox.dlt.at header, else the
// record's timestamp.
func (l Letter) At() time.Time {
	if !l.DeadLetter.At.IsZero() {
		return l.DeadLetter.At
	}
	return l.Record.Timestamp
}

// Position is a record's place in the dead-letter topic.
type Position struct {
	// Partition of the dead-letter topic.
	Partition int32
	// Offset within the partition.
	Offset int64
}

// String renders the position as "partition:offset".
func (p Position) String() string { return fmt.Sprintf("%d:%d", p.Partition, p.Offset) }

// ParsePosition parses "partition:offset".
func ParsePosition(s string) (Position, error) {
	ps, os, ok := strings.Cut(strings.TrimSpace(s), ":")
	p, err1 := strconv.ParseInt(ps, 10, 32)
	o, err2 := strconv.ParseInt(os, 10, 64)
	if !ok || err1 != nil || err2 != nil || p < 0 || o < 0 {
		return Position{}, fmt.Errorf("deadletter: position %q: want partition:offset, e.g. 0:42", s)
	}
	return Position{Partition: int32(p), Offset: o}, nil
}

// ParseWhen reads a time as the dead-letter filters take it (Filter.Since
// and Until, `outbox dlq --since/--until`, the console's form): RFC 3339
// (2026-01-02T15:04:05Z), or a Go duration before now (2h). "" is the zero
// time, which bounds nothing. It lives here so the CLI and the console read
// the same input the same way; the error names the input and both forms.
func ParseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-01-02T15:04:05Z) or a duration ago (2h)", s)
}

// Filter selects dead letters. The zero Filter selects everything; set fields
// must all match.
type Filter struct {
	// OriginTopic is the topic the record was dead-lettered from.
	OriginTopic string
	// ErrorContains is a case-insensitive substring of the error class or message.
	ErrorContains string
	// Since and Until bound when the record was dead-lettered (Letter.At),
	// Since inclusive, Until exclusive.
	Since, Until time.Time
	// Key is the record key, exactly.
	Key string
	// Positions, when set, are the only records selected.
	Positions []Position
}

// Match reports whether l passes the filter.
func (f Filter) Match(l Letter) bool {
	if f.OriginTopic != "" && l.DeadLetter.OriginTopic != f.OriginTopic {
		return false
	}
	if f.ErrorContains != "" {
		needle := strings.ToLower(f.ErrorContains)
		if !strings.Contains(strings.ToLower(l.DeadLetter.ErrorMessage), needle) &&
			!strings.Contains(strings.ToLower(l.DeadLetter.ErrorClass), needle) {
			return false
		}
	}
	at := l.At()
	if !f.Since.IsZero() && at.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !at.Before(f.Until) {
		return false
	}
	if f.Key != "" && string(l.Record.Key) != f.Key {
		return false
	}
	if len(f.Positions) > 0 {
		for _, p := range f.Positions {
			if p == l.Position() {
				return true
			}
		}
		return false
	}
	return true
}

// IsDeadLetterHeader reports whether a header was added by dead-lettering (or
// by a previous replay) rather than carried from the original record: the
// Kafka Connect `__connect.errors.*`, Spring `kafka_dlt-*` and `outbox.dlt.*`
// names.
func IsDeadLetterHeader(key string) bool {
	return strings.HasPrefix(key, "__connect.errors.") || strings.HasPrefix(key, "kafka_dlt-") || strings.HasPrefix(key, "outbox.dlt.")
}

// HeadersView is a letter's dead-letter headers in the shape `outbox dlq
// list --json` and `dlq show --json` print and the console's pages serve,
// so the two compare field by field.
type HeadersView struct {
	OriginTopic     string             `json:"origin_topic"`
	OriginPartition int32              `json:"origin_partition"`
	OriginOffset    int64              `json:"origin_offset"`
	OriginTimestamp *time.Time         `json:"origin_timestamp,omitempty"`
	Group           string             `json:"group,omitempty"`
	Stage           string             `json:"stage"`
	StageName       string             `json:"stage_name,omitempty"`
	ErrorClass      string             `json:"error_class"`
	ErrorMessage    string             `json:"error_message"`
	Attempt         int                `json:"attempt"`
	History         []envelope.Attempt `json:"history,omitempty"`
	At              time.Time          `json:"at"`
}

// View is l's dead-letter headers as a HeadersView, in UTC; an origin
// timestamp that was never set is left out.
func (l Letter) View() HeadersView {
	d := l.DeadLetter
	v := HeadersView{OriginTopic: d.OriginTopic, OriginPartition: d.OriginPartition, OriginOffset: d.OriginOffset,
		Group: d.Group, Stage: d.Stage, StageName: d.StageName, ErrorClass: d.ErrorClass, ErrorMessage: d.ErrorMessage,
		Attempt: d.Attempt, History: d.History, At: l.At().UTC()}
	if d.OriginTimestamp.Year() > 1970 {
		ts := d.OriginTimestamp.UTC()
		v.OriginTimestamp = &ts
	}
	return v
}
