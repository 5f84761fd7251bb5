package schema

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// ErrNotRegistered is returned by Wire.Encode when the registry does not
// have the version the value would be written with and WireConfig.Register
// is off: run `outbox schema register` in the deploy pipeline first.
var ErrNotRegistered = errors.New("schema: the schema version is not registered (run `outbox schema register`)")

// ErrUnknownSchema is returned by Wire.Decode for a schema id the registry
// does not have: the value was written against another registry (or the
// schema was deleted). Unlike ErrRegistry it does not heal by retrying.
var ErrUnknownSchema = errors.New("schema: the registry has no schema with the value's id")

// ErrUnsupported is returned by Wire.Decode for a schema type it cannot
// decode (Protobuf).
var ErrUnsupported = errors.New("schema: unsupported schema type on the wire")

// WireConfig configures a Wire.
type WireConfig struct {
	// Registry is the Confluent-compatible registry client (franz-go's
	// sr.Client). Required.
	Registry *sr.Client
	// Set holds the schemas values are written with: an event type's
	// latest version in Format. Required for Encode; Decode needs only the
	// registry.
	Set *Set
	// Format is what Encode puts on the wire: FormatAvro (the default, ""
	// too) or FormatJSON (JSON Schema: the JSON text after the header).
	Format Format
	// Register registers a version the registry does not have yet, subject
	// to the subject's compatibility mode. Defaults to false: look it up
	// only and fail with ErrNotRegistered, so that only the deploy pipeline
	// (`outbox schema register`) changes the registry.
	Register bool
}

// Wire writes and reads values in the Confluent wire format (magic byte 0,
// the schema id as 4 bytes big-endian, then the Avro binary datum or the
// JSON text), so Java consumers with KafkaAvroDeserializer or
// KafkaJsonSchemaDeserializer read what the relay writes. Ids are looked up
// once per version and schemas once per id; a Wire is safe for concurrent
// use.
type Wire struct {
	cfg    WireConfig
	header sr.ConfluentHeader

	mu   sync.Mutex
	ids  map[*Version]int
	byID map[int]*wireSchema
}

// wireSchema is a schema read from the registry by id.
type wireSchema struct {
	typ   sr.SchemaType
	codec *goavro.Codec // Avro only
}

// NewWire checks cfg and returns a Wire.
func NewWire(cfg WireConfig) (*Wire, error) {
	if cfg.Registry == nil {
		return nil, errors.New("schema: WireConfig.Registry is required")
	}
	switch cfg.Format {
	case "":
		cfg.Format = FormatAvro
	case FormatAvro, FormatJSON:
	default:
		return nil, fmt.Errorf("schema: WireConfig.Format %q: want %s or %s", cfg.Format, FormatAvro, FormatJSON)
	}
	return &Wire{cfg: cfg, ids: map[*Version]int{}, byID: map[int]*wireSchema{}}, nil
}

// Encode turns a JSON payload of eventType into a wire-format value with
// the event type's latest version in the configured format. encoded is
// false, and value the payload unchanged, when the set has no such schema
// for eventType. A payload that does not fit the schema is a
// *ValidationError (ErrMismatch); a registry that cannot answer is an
// ErrRegistry error, worth retrying.
func (w *Wire) Encode(ctx context.Context, eventType string, payload []byte) (value []byte, encoded bool, err error) {
	if w.cfg.Set == nil {
		return nil, false, errors.New("schema: Wire.Encode needs WireConfig.Set")
	}
	v := w.cfg.Set.History(eventType, w.cfg.Format).Latest()
	if v == nil {
		return payload, false, nil
	}
	body := payload
	switch v.Format {
	case FormatAvro:
		if body, err = v.AvroBinary(payload); err != nil {
			return nil, false, err
		}
	case FormatJSON:
		if err := v.Validate(payload); err != nil {
			return nil, false, err
		}
	}
	id, err := w.id(ctx, v)
	if err != nil {
		return nil, false, err
	}
	out, err := w.header.AppendEncode(make([]byte, 0, 5+len(body)), id, nil)
	if err != nil {
		return nil, false, err
	}
	return append(out, body...), true, nil
}

// IsWire reports whether value looks like the Confluent wire format: the
// magic byte 0 and a schema id. A JSON document never starts with byte 0.
func IsWire(value []byte) bool { return len(value) >= 5 && value[0] == 0 }

// Decode turns a wire-format value back into the JSON the writer stored:
// the Avro datum decoded with the schema the id names, or the JSON text
// after the header. A value that is not in the wire format comes back
// unchanged with decoded false.
func (w *Wire) Decode(ctx context.Context, value []byte) (payload []byte, decoded bool, err error) {
	if !IsWire(value) {
		return value, false, nil
	}
	id, body, err := w.header.DecodeID(value)
	if err != nil {
		return nil, false, fmt.Errorf("schema: decode wire header: %w", err)
	}
	s, err := w.schemaByID(ctx, id)
	if err != nil {
		return nil, false, err
	}
	switch s.typ {
	case sr.TypeAvro:
		out, err := avroJSON(s.codec, body)
		if err != nil {
			return nil, false, fmt.Errorf("schema: decode Avro value with schema id %d: %w", id, err)
		}
		return out, true, nil
	case sr.TypeJSON:
		return body, true, nil
	}
	return nil, false, fmt.Errorf("%w: schema id %d is %s", ErrUnsupported, id, s.typ)
}

// id is the registry id of v, registered or looked up once.
func (w *Wire) id(ctx context.Context, v *Version) (int, error) {
	w.mu.Lock()
	id, ok := w.ids[v]
	w.mu.Unlock()
	if ok {
		return id, nil
	}
	subject := Subject(v.EventType, v.Format)
	s := sr.Schema{Schema: string(v.Source), Type: srType(v.Format)}
	var ss sr.SubjectSchema
	var err error
	if w.cfg.Register {
		ss, err = w.cfg.Registry.CreateSchema(ctx, subject, s)
	} else {
		ss, err = w.cfg.Registry.LookupSchema(ctx, subject, s)
		if notFound(err) {
			return 0, fmt.Errorf("%w: %s in subject %s", ErrNotRegistered, v.Name(), subject)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %s in subject %s: %w", ErrRegistry, v.Name(), subject, err)
	}
	w.mu.Lock()
	w.ids[v] = ss.ID
	w.mu.Unlock()
	return ss.ID, nil
}

// schemaByID reads a schema from the registry once per id.
func (w *Wire) schemaByID(ctx context.Context, id int) (*wireSchema, error) {
	w.mu.Lock()
	s, ok := w.byID[id]
	w.mu.Unlock()
	if ok {
		return s, nil
	}
	got, err := w.cfg.Registry.SchemaByID(ctx, id)
	if notFound(err) {
		return nil, fmt.Errorf("%w: id %d", ErrUnknownSchema, id)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: schema id %d: %w", ErrRegistry, id, err)
	}
	s = &wireSchema{typ: got.Type} // absent schemaType is Avro: TypeAvro is the zero value
	if s.typ == sr.TypeAvro {
		if s.codec, err = newAvroCodec(got.Schema); err != nil {
			return nil, fmt.Errorf("schema: schema id %d from the registry: %w", id, err)
		}
	}
	w.mu.Lock()
	w.byID[id] = s
	w.mu.Unlock()
	return s, nil
}

// srType is the registry's name of a format.
func srType(f Format) sr.SchemaType {
	if f == FormatJSON {
		return sr.TypeJSON
	}
	return sr.TypeAvro
}

// notFound reports whether err is the registry saying the subject or the
// schema is not there.
func notFound(err error) bool {
	var re *sr.ResponseError
	return errors.As(err, &re) && (re.StatusCode == http.StatusNotFound || re.ErrorCode == 40401 || re.ErrorCode == 40403)
}

// Registered is one version Register put in (or found in) the registry.
type Registered struct {
	// Version is the schemas-folder version: "order.created v2 (AVRO)".
	Version string
	// Subject is the registry subject.
	Subject string
	// SubjectVersion is the registry's version number in the subject.
	SubjectVersion int
	// ID is the schema id values carry on the wire.
	ID int
}

// Register registers every version of every event type in s, oldest first,
// each under its subject (registering a schema the subject already has
// returns its id and changes nothing). The registry checks each against
// the subject's compatibility mode; the first refusal stops the run with
// the registry's message. It is what `outbox schema register` runs in a
// deploy pipeline.
func Register(ctx context.Context, cl *sr.Client, s *Set) ([]Registered, error) {
	var out []Registered
	for _, name := range s.Types() {
		for _, f := range []Format{FormatAvro, FormatJSON} {
			for _, v := range s.History(name, f) {
				subject := Subject(v.EventType, v.Format)
				ss, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: string(v.Source), Type: srType(v.Format)})
				if err != nil {
					return out, fmt.Errorf("schema: register %s in subject %s: %w", v.Name(), subject, err)
				}
				out = append(out, Registered{Version: v.Name(), Subject: subject, SubjectVersion: ss.Version, ID: ss.ID})
			}
		}
	}
	return out, nil
}
