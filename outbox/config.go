package outbox

import (
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/internal/pgschema"
	"github.com/outboxrelay/outbox/sql"
)

// Config configures a Writer. The zero value is valid.
type Config struct {
	// Schema holds the outbox tables. Defaults to "outbox".
	Schema string
	// MaxPayloadBytes is the largest payload accepted. Defaults to 1 MiB, Kafka's
	// default message size limit; raise it only with the topic's max.message.bytes
	// and the database's own limit, the first argument of the events_validate
	// trigger (docs/writer.md), which otherwise rejects the event.
	MaxPayloadBytes int
	// MaxHeaderBytes bounds an event's headers (keys plus values). Defaults to 64 KiB.
	// The events_validate trigger's second argument is the database's copy.
	MaxHeaderBytes int
	// KeyTTL is how long an idempotency key is remembered. Defaults to 24h.
	KeyTTL time.Duration
	// Propagator reads trace context from ctx into headers. Defaults to
	// otel.GetTextMapPropagator() when one is installed, else W3C TraceContext.
	Propagator propagation.TextMapPropagator
	// Now is the clock for occurred_at defaults (tests). Defaults to time.Now.
	Now func() time.Time
	// ClaimCheck stores large payloads outside Kafka and puts a reference in
	// the event instead (docs/writer.md, "Claim-check"). Defaults to off: an
	// event over MaxPayloadBytes is rejected with ErrPayloadTooLarge.
	ClaimCheck ClaimCheckConfig
	// Schemas checks each event's payload against its event type's schema
	// before anything is written: a *schema.Set (schema.Load of the
	// service's schemas folder) checks the latest JSON Schema and Avro
	// version of the types it has and lets other types through. A payload
	// that does not match fails the write with a *ValidationError wrapping
	// ErrSchemaMismatch. Defaults to nil: payloads are only checked to be
	// JSON.
	Schemas Validator
}

// Validator checks a payload against its event type's schema; it returns
// nil for a match and for an event type it has no schema for, and an error
// that errors.Is ErrSchemaMismatch otherwise. *schema.Set implements it.
type Validator interface {
	Validate(eventType string, payload []byte) error
}

// ClaimCheckConfig configures claim-check writes. The zero value is off.
type ClaimCheckConfig struct {
	// Store keeps the payloads; claimcheck.NewPostgres writes in the caller's
	// transaction. Defaults to nil: claim-check off, and an Event with
	// ClaimCheck set is rejected with ErrClaimCheckOff.
	Store claimcheck.Store
	// Threshold is the payload size in bytes above which an event's payload
	// goes to Store; smaller payloads go to Kafka unless the event is marked
	// (Event.ClaimCheck). It must not exceed MaxPayloadBytes. Defaults to
	// MaxPayloadBytes: exactly the payloads that would be rejected.
	Threshold int
	// MaxBytes is the largest payload accepted through the store. Defaults
	// to 256 MiB (a Postgres bytea holds at most 1 GiB).
	MaxBytes int
}

// Defaults used when Config leaves a field zero.
const (
	DefaultMaxPayloadBytes = 1 << 20
	DefaultMaxHeaderBytes  = 64 << 10
	DefaultKeyTTL          = 24 * time.Hour
	// DefaultClaimCheckMaxBytes is ClaimCheckConfig.MaxBytes's default.
	DefaultClaimCheckMaxBytes = 256 << 20
)

// Writer writes events and claims idempotency keys in the caller's transaction.
// It holds no connection and is safe for concurrent use.
type Writer struct {
	cfg Config
	q   *sql.Queries
}

// New validates cfg and returns a Writer.
func New(cfg Config) (*Writer, error) {
	if cfg.Schema == "" {
		cfg.Schema = pgschema.Default
	}
	if err := pgschema.Validate(cfg.Schema); err != nil {
		return nil, fmt.Errorf("outbox: config: %w", err)
	}
	if cfg.MaxPayloadBytes == 0 {
		cfg.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if cfg.MaxPayloadBytes < 0 {
		return nil, fmt.Errorf("outbox: config: MaxPayloadBytes %d is negative", cfg.MaxPayloadBytes)
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxHeaderBytes < 0 {
		return nil, fmt.Errorf("outbox: config: MaxHeaderBytes %d is negative", cfg.MaxHeaderBytes)
	}
	if cfg.KeyTTL == 0 {
		cfg.KeyTTL = DefaultKeyTTL
	}
	if cfg.KeyTTL < time.Second {
		return nil, fmt.Errorf("outbox: config: KeyTTL %s is below one second", cfg.KeyTTL)
	}
	if cfg.Propagator == nil {
		cfg.Propagator = otel.GetTextMapPropagator()
		if len(cfg.Propagator.Fields()) == 0 {
			cfg.Propagator = propagation.TraceContext{}
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cc := &cfg.ClaimCheck; cc.Store != nil {
		if cc.Threshold == 0 {
			cc.Threshold = cfg.MaxPayloadBytes
		}
		if cc.MaxBytes == 0 {
			cc.MaxBytes = DefaultClaimCheckMaxBytes
		}
		if cc.Threshold < 0 || cc.Threshold > cfg.MaxPayloadBytes {
			return nil, fmt.Errorf("outbox: config: ClaimCheck.Threshold %d must be between 0 and MaxPayloadBytes %d", cc.Threshold, cfg.MaxPayloadBytes)
		}
		if cc.MaxBytes < cc.Threshold {
			return nil, fmt.Errorf("outbox: config: ClaimCheck.MaxBytes %d is below ClaimCheck.Threshold %d", cc.MaxBytes, cc.Threshold)
		}
	}
	return &Writer{cfg: cfg, q: sql.New()}, nil
}

// db qualifies the generated queries with the configured schema.
func (w *Writer) db(tx sql.DBTX) sql.DBTX { return sql.InSchema(tx, w.cfg.Schema) }
