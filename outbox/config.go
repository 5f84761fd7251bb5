package outbox

import (
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

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
}

// Defaults used when Config leaves a field zero.
const (
	DefaultMaxPayloadBytes = 1 << 20
	DefaultMaxHeaderBytes  = 64 << 10
	DefaultKeyTTL          = 24 * time.Hour
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
	return &Writer{cfg: cfg, q: sql.New()}, nil
}

// db qualifies the generated queries with the configured schema.
func (w *Writer) db(tx sql.DBTX) sql.DBTX { return sql.InSchema(tx, w.cfg.Schema) }
