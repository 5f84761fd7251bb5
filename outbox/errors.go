package outbox

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxrelay/outbox/schema"
)

// Validation sentinels. Write returns a *ValidationError that wraps one of
// them; test with errors.Is. Nothing is written when any event is invalid.
//
// The database checks every inserted event by the same rules (the
// events_validate trigger of migration 00003, which also guards writers in
// other languages). When it rejects an event that passed here, because its
// limits are lower than Config's, Write and Batch.Run return an error that
// wraps both the same sentinel and the *pgconn.PgError (SQLSTATE OB001 to
// OB009, listed in docs/writer.md), and the transaction is aborted.
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
	// ErrInvalidJSON is returned for a payload that is not valid UTF-8 JSON text
	// while the content type says JSON (application/json or any +json type).
	ErrInvalidJSON = errors.New("payload is not valid JSON")
	// ErrHeadersTooLarge is returned when an event's headers exceed Config.MaxHeaderBytes.
	ErrHeadersTooLarge = errors.New("headers too large")
	// ErrInvalidTopic is returned for a topic Kafka would not accept.
	ErrInvalidTopic = errors.New("invalid topic")
	// ErrInvalidKind is returned for a kind other than KindEvent or KindRecord.
	ErrInvalidKind = errors.New("invalid kind")
	// ErrInvalidEventID is returned for a caller-supplied event id that is not a UUIDv7.
	ErrInvalidEventID = errors.New("event id must be a UUIDv7")
	// ErrClaimCheckOff is returned for an event marked ClaimCheck by a Writer
	// whose Config.ClaimCheck has no store.
	ErrClaimCheckOff = errors.New("claim-check requested but Config.ClaimCheck has no store")
	// ErrClaimCheckUnsupported is returned by Batch.ClaimAndWrite for an event
	// that needs claim-check: the batch records that statement whole and cannot
	// queue the store's write before it. Use Batch.Write or Writer.ClaimAndWrite.
	ErrClaimCheckUnsupported = errors.New("claim-check is not supported by Batch.ClaimAndWrite")
	// ErrSchemaMismatch is returned for a payload that does not match its
	// event type's schema (Config.Schemas). It is schema.ErrMismatch: the
	// ValidationError's Err is the *schema.ValidationError naming the
	// version and the field.
	ErrSchemaMismatch = schema.ErrMismatch
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
	// Err is one of the validation sentinels, or for ErrSchemaMismatch the
	// *schema.ValidationError that wraps it.
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

// sqlStateErrors maps the SQLSTATEs the events_validate trigger raises to the
// sentinel of the same rule. OB010 (headers not an object of strings) has none:
// the Go types cannot express it.
var sqlStateErrors = map[string]error{
	"OB001": ErrInvalidEventID,
	"OB002": ErrMissingAggregateType,
	"OB003": ErrMissingAggregateID,
	"OB004": ErrMissingEventType,
	"OB005": ErrPayloadTooLarge,
	"OB006": ErrInvalidJSON,
	"OB007": ErrHeadersTooLarge,
	"OB008": ErrInvalidTopic,
	"OB009": ErrInvalidKind,
}

// dbError makes an event the database rejected answer errors.Is with the
// sentinel the Go check uses for the same rule.
func dbError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if sentinel, ok := sqlStateErrors[pgErr.Code]; ok {
			return fmt.Errorf("%w: %w", sentinel, err)
		}
	}
	return err
}
