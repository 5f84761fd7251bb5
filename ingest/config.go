package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/pgschema"
)

// Preset names a provider whose signature scheme, delivery id and mapping
// defaults are built in.
type Preset string

const (
	// PresetStripe verifies Stripe-Signature (t=...,v1=...; HMAC-SHA256 of
	// "t.body"; the timestamp within Source.Tolerance), takes the delivery id
	// from the body's /id and maps /data/object/object, /data/object/id,
	// version /created and event type /type.
	PresetStripe Preset = "stripe"
	// PresetGitHub verifies X-Hub-Signature-256 (sha256=HEX of the body),
	// takes the delivery id from X-GitHub-Delivery and maps the object the
	// X-GitHub-Event names (see docs/ingest.md): its id and updated_at, event
	// type EVENT.ACTION.
	PresetGitHub Preset = "github"
	// PresetGeneric verifies an HMAC-SHA256 of the body in a configured
	// header (hex or base64, optional prefix); delivery id and mapping are
	// configured.
	PresetGeneric Preset = "generic"
)

// Defaults used when Config or Source leaves a field zero.
const (
	// DefaultMaxBodyBytes is Config.MaxBodyBytes' default: the writer's
	// payload limit.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultDedupWindow is Config.DedupWindow's default: as long as Stripe
	// retries a delivery.
	DefaultDedupWindow = 72 * time.Hour
	// DefaultStripeTolerance is Source.Tolerance's default, Stripe's own.
	DefaultStripeTolerance = 5 * time.Minute
)

// Field says where a value of a delivery is read: a JSON pointer into the
// body ("/data/object/id"), a request header ("header:X-GitHub-Event"), or
// a constant ("=customer"). The empty Field means the preset's default.
type Field string

// header returns the header name of a "header:" field.
func (f Field) header() (string, bool) {
	name, ok := strings.CutPrefix(string(f), "header:")
	return strings.TrimSpace(name), ok
}

func (f Field) validate() error {
	if lit, ok := strings.CutPrefix(string(f), "="); ok {
		if lit == "" {
			return fmt.Errorf("%q is an empty constant", f)
		}
		return nil
	}
	if name, ok := f.header(); ok {
		if name == "" {
			return fmt.Errorf("%q names no header", f)
		}
		return nil
	}
	if f == "" {
		return nil
	}
	return validPointer(string(f))
}

// needsJSON reports whether reading f needs the body as JSON.
func (f Field) needsJSON() bool {
	_, isHeader := f.header()
	return f != "" && !isHeader && !strings.HasPrefix(string(f), "=")
}

// Signature configures PresetGeneric's signature header.
type Signature struct {
	// Header holds the signature, e.g. "X-Signature". Required for generic.
	Header string `yaml:"header" json:"header"`
	// Encoding of the MAC: "hex" or "base64" (standard, padded). Defaults to hex.
	Encoding string `yaml:"encoding" json:"encoding"`
	// Prefix before the MAC, e.g. "sha256="; required in the header when set.
	Prefix string `yaml:"prefix" json:"prefix"`
}

// Mapping says where the parts of a record are in a delivery. Empty fields
// take the preset's defaults; a generic source with no EntityID is raw-only
// (no record, no version check, no JSON required).
type Mapping struct {
	// EntityType is the entity's type, e.g. "customer".
	EntityType Field `yaml:"entity_type" json:"entity_type"`
	// EntityID is the entity's id within its type.
	EntityID Field `yaml:"entity_id" json:"entity_id"`
	// Version is an integer that grows with every change of the entity (a
	// JSON number or a string of digits).
	Version Field `yaml:"version" json:"version"`
	// UpdatedAt is when the entity last changed: an RFC 3339 string or Unix
	// seconds. With Version too, deliveries compare by version first.
	UpdatedAt Field `yaml:"updated_at" json:"updated_at"`
	// EventType names what happened, e.g. "customer.updated".
	EventType Field `yaml:"event_type" json:"event_type"`
	// Object is the JSON pointer of the entity's state, the record's payload.
	// "" (generic's default) is the whole body.
	Object string `yaml:"object" json:"object"`
}

// Topics routes a source's events. Defaults: webhooks.SOURCE (raw),
// SOURCE.records (compacted records) and SOURCE.events.
type Topics struct {
	// Raw receives every stored delivery as it came (kind event), stale
	// ones included. Defaults to webhooks.SOURCE.
	Raw string `yaml:"raw" json:"raw"`
	// Records receives the entity's state per accepted delivery (kind
	// record, key SOURCE.TYPE.ID); make it compacted. Defaults to SOURCE.records.
	Records string `yaml:"records" json:"records"`
	// Events receives a right-sized event per accepted delivery. Defaults
	// to SOURCE.events.
	Events string `yaml:"events" json:"events"`
}

// Source is one webhook sender, served at /webhooks/{Name}.
type Source struct {
	// Name is the path segment and the metrics label: [a-z0-9_-], 1 to 64.
	// Required.
	Name string
	// Preset is stripe, github or generic. Required.
	Preset Preset
	// Secrets are the shared HMAC secrets; a signature made with any of them
	// is accepted, so a secret is rotated by adding the new one first and
	// removing the old one after the provider switched. At least one.
	Secrets [][]byte
	// Tolerance bounds how far Stripe's signed timestamp may be from now.
	// Stripe only; defaults to 5m.
	Tolerance time.Duration
	// Signature configures a generic source's signature header.
	Signature Signature
	// DeliveryID is where the provider's event id is (the deduplication
	// key). Stripe defaults to /id, GitHub to header:X-GitHub-Delivery;
	// required for generic.
	DeliveryID Field
	// Mapping of the record; see Mapping.
	Mapping Mapping
	// Topics of the raw webhooks, records and events; see Topics.
	Topics Topics
}

// Config configures a Handler.
type Config struct {
	// Pool runs the ingest transactions. Required.
	Pool *pgxpool.Pool
	// Schema holds the outbox tables. Defaults to "outbox".
	Schema string
	// Sources served; at least one, names unique.
	Sources []Source
	// MaxBodyBytes is the largest body accepted (413 above). Defaults to 1 MiB,
	// the writer's payload limit.
	MaxBodyBytes int64
	// DedupWindow is how long a delivery id is remembered (the idempotency
	// key's TTL; expired keys are deleted by maintain()). Defaults to 72h,
	// as long as Stripe retries. A redelivery after it is written again as
	// raw, and is stale for the version check.
	DedupWindow time.Duration
	// Logger for deliveries that fail. Defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics. Defaults to none.
	Registerer prometheus.Registerer
	// Now is the clock for Stripe's timestamp tolerance (tests). Defaults to time.Now.
	Now func() time.Time
}

// ErrConfig is wrapped by every configuration error New and ParseConfig return.
var ErrConfig = errors.New("ingest: config")

var sourceNameRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// validate fills defaults and checks cfg once, naming the source and field
// in each error.
func (cfg *Config) validate() error {
	if cfg.Pool == nil {
		return fmt.Errorf("%w: Pool is required", ErrConfig)
	}
	if cfg.Schema == "" {
		cfg.Schema = pgschema.Default
	}
	if err := pgschema.Validate(cfg.Schema); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxBodyBytes < 0 {
		return fmt.Errorf("%w: MaxBodyBytes %d is negative", ErrConfig, cfg.MaxBodyBytes)
	}
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = DefaultDedupWindow
	}
	if cfg.DedupWindow < time.Second {
		return fmt.Errorf("%w: DedupWindow %s is below one second", ErrConfig, cfg.DedupWindow)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return validateSources(cfg.Sources)
}

// validateSources fills the presets' defaults into sources and checks them.
// It may run twice on the same sources (ParseConfig, then New).
func validateSources(sources []Source) error {
	if len(sources) == 0 {
		return fmt.Errorf("%w: no sources", ErrConfig)
	}
	seen := map[string]bool{}
	var errs []error
	for i := range sources {
		s := &sources[i]
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("%w: source %q appears twice", ErrConfig, s.Name))
			continue
		}
		seen[s.Name] = true
		if err := s.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%w: source %q: %w", ErrConfig, s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// validate fills the preset's defaults into s and checks it.
func (s *Source) validate() error {
	if !sourceNameRE.MatchString(s.Name) {
		return errors.New("name must match [a-z0-9_-]{1,64}")
	}
	if len(s.Secrets) == 0 {
		return errors.New("no secret: name at least one environment variable in secret_env")
	}
	for i, sec := range s.Secrets {
		if len(sec) == 0 {
			return fmt.Errorf("secret %d is empty", i+1)
		}
	}
	switch s.Preset {
	case PresetStripe:
		if s.Tolerance == 0 {
			s.Tolerance = DefaultStripeTolerance
		}
		if s.Tolerance < 0 {
			return fmt.Errorf("tolerance %s is negative", s.Tolerance)
		}
		s.DeliveryID = orField(s.DeliveryID, "/id")
		m := &s.Mapping
		m.EntityType = orField(m.EntityType, "/data/object/object")
		m.EntityID = orField(m.EntityID, "/data/object/id")
		if m.Version == "" && m.UpdatedAt == "" {
			m.Version = "/created"
		}
		m.EventType = orField(m.EventType, "/type")
		if m.Object == "" {
			m.Object = "/data/object"
		}
	case PresetGitHub:
		s.DeliveryID = orField(s.DeliveryID, "header:X-GitHub-Delivery")
		// The rest is resolved per delivery from X-GitHub-Event (githubDefaults).
	case PresetGeneric:
		sig := &s.Signature
		if strings.TrimSpace(sig.Header) == "" {
			return errors.New("signature.header is required for the generic preset")
		}
		sig.Header = http.CanonicalHeaderKey(strings.TrimSpace(sig.Header))
		switch sig.Encoding {
		case "":
			sig.Encoding = "hex"
		case "hex", "base64":
		default:
			return fmt.Errorf("signature.encoding %q: use hex or base64", sig.Encoding)
		}
		if s.DeliveryID == "" {
			return errors.New("delivery_id is required for the generic preset (a header:NAME or a JSON pointer)")
		}
		m := s.Mapping
		if m.EntityID == "" && (m.EntityType != "" || m.Version != "" || m.UpdatedAt != "" || m.Object != "") {
			return errors.New("mapping.entity_id is required when any other mapping field is set")
		}
		if m.EntityID != "" {
			if m.EntityType == "" || m.EventType == "" {
				return errors.New("mapping needs entity_type and event_type with entity_id")
			}
			if m.Version == "" && m.UpdatedAt == "" {
				return errors.New("mapping needs version or updated_at (or both) to order deliveries")
			}
		}
	case "":
		return errors.New("preset is required: stripe, github or generic")
	default:
		return fmt.Errorf("preset %q: use stripe, github or generic", s.Preset)
	}
	if s.Preset != PresetStripe && s.Tolerance != 0 {
		return errors.New("tolerance applies to the stripe preset only (the others sign no timestamp)")
	}
	if s.Preset != PresetGeneric && s.Signature != (Signature{}) {
		return fmt.Errorf("signature applies to the generic preset only (%s has its own)", s.Preset)
	}
	fields := map[string]Field{
		"delivery_id": s.DeliveryID, "mapping.entity_type": s.Mapping.EntityType, "mapping.entity_id": s.Mapping.EntityID,
		"mapping.version": s.Mapping.Version, "mapping.updated_at": s.Mapping.UpdatedAt, "mapping.event_type": s.Mapping.EventType,
	}
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := fields[n].validate(); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	if err := validPointer(s.Mapping.Object); err != nil {
		return fmt.Errorf("mapping.object: %w", err)
	}
	t := &s.Topics
	t.Raw = orString(t.Raw, "webhooks."+s.Name)
	t.Records = orString(t.Records, s.Name+".records")
	t.Events = orString(t.Events, s.Name+".events")
	for n, topic := range map[string]string{"raw": t.Raw, "records": t.Records, "events": t.Events} {
		if err := envelope.ValidTopic(topic); err != nil {
			return fmt.Errorf("topics.%s: %w", n, err)
		}
	}
	return nil
}

// mapped reports whether deliveries of s become records.
func (s *Source) mapped() bool { return s.Preset != PresetGeneric || s.Mapping.EntityID != "" }

// needsJSON reports whether every delivery of s must be a JSON body.
func (s *Source) needsJSON() bool { return s.mapped() || s.DeliveryID.needsJSON() }

func orField(f, def Field) Field {
	if f == "" {
		return def
	}
	return f
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
