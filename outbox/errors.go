package outbox

import (
	"errors"
	"fmt"
)

// Validation sentinels. Write returns a *ValidationError that wraps one of
// them; test with errors.Is. Nothing is written when any event is invalid.
var (
	// ErrMissingAggregateType is returned for an event without an aggregate type.
	ErrMissingAggregateType = errors.New("aggregate type is required")
	// ErrMissingAggregateID is returned for an event without an aggregate id
	// (the Kafka key: all events of one aggregate land in one partition).
	ErrMissingAggregateID = errors.New("aggregate id is required")
	// ErrMissingEventType is returned for an event without an event type.
	ErrMissingEventType = errors.New("event type is required")
	// ErrPayloadTooLarge is returned for a payload over Config.MaxPayloadBytes.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrInvalidJSON is returned for a payload that is not valid JSON while the
	// content type says JSON.
	ErrInvalidJSON = errors.New("payload is not valid JSON")
	// ErrHeadersTooLarge is returned when an event's headers exceed Config.MaxHeaderBytes.
	ErrHeadersTooLarge = errors.New("headers too large")
	// ErrInvalidTopic is returned for a topic Kafka would not accept.
	ErrInvalidTopic = errors.New("invalid topic")
	// ErrInvalidKind is returned for a kind other than KindEvent or KindRecord.
	ErrInvalidKind = errors.New("invalid kind")
	// ErrInvalidEventID is returned for a caller-supplied event id that is not a UUIDv7.
	ErrInvalidEventID = errors.New("event id must be a UUIDv7")
	// ErrNoEvents is returned by Write when called without events.
	ErrNoEvents = errors.New("no events to write")
)

// Idempotency-key sentinels, returned by ClaimKey and CompleteKey.
var (
	// ErrKeyInFlight means another request with this key is being processed now
	// (or its transaction committed without CompleteKey). Answer 409 Conflict;
	// the client retries later and gets the stored response.
	ErrKeyInFlight = errors.New("outbox: idempotency key is in flight")
	// ErrKeyMismatch means the key was used before with a different request
	// fingerprint. Answer 422 Unprocessable Content.
	ErrKeyMismatch = errors.New("outbox: idempotency key reused with a different request")
	// ErrInvalidKey is returned for an empty key or one over 255 bytes. Answer 400.
	ErrInvalidKey = errors.New("outbox: invalid idempotency key")
	// ErrKeyNotClaimed is returned by CompleteKey when this transaction does not
	// hold a started claim on the key.
	ErrKeyNotClaimed = errors.New("outbox: idempotency key not claimed in this transaction")
)

// ValidationError says which event of a Write is invalid and why.
type ValidationError struct {
	// Index of the event in the Write call.
	Index int
	// Field is the offending field, e.g. "Payload".
	Field string
	// Err is one of the validation sentinels.
	Err error
	// Detail adds what was found, e.g. the size.
	Detail string
}

func (e *ValidationError) Error() string {
	msg := fmt.Sprintf("outbox: event %d: %s: %v", e.Index, e.Field, e.Err)
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// Unwrap returns the sentinel.
func (e *ValidationError) Unwrap() error { return e.Err }
