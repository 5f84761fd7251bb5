package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/linkedin/goavro/v2"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// ErrMismatch is what a payload that does not match its event type's schema
// is (errors.Is); the error itself is a *ValidationError naming the version
// and the reason.
var ErrMismatch = errors.New("schema: payload does not match the event type's schema")

// ValidationError is the rejection of one payload by one schema version.
type ValidationError struct {
	// EventType is the payload's event type.
	EventType string
	// Version is the version that refused it: "order.created v2 (AVRO)".
	Version string
	// Reason is the schema library's message: the field and what is wrong.
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("schema: %s payload does not match %s: %s", e.EventType, e.Version, e.Reason)
}

// Is makes errors.Is(err, ErrMismatch) true.
func (e *ValidationError) Is(target error) bool { return target == ErrMismatch }

// Validate checks a JSON payload of eventType against the latest version of
// each format the event type has: the JSON Schema validates the document,
// and the Avro schema must encode it as it is (every field it names with
// the right type, none it does not know: Avro would drop an unknown field
// on the wire). An event type without schemas is not checked (nil); a
// mismatch is a *ValidationError.
func (s *Set) Validate(eventType string, payload []byte) error {
	t, ok := s.types[eventType]
	if !ok {
		return nil
	}
	for _, f := range []Format{FormatJSON, FormatAvro} {
		if v := t.Histories[f].Latest(); v != nil {
			if err := v.Validate(payload); err != nil {
				return err
			}
		}
	}
	return nil
}

// Validate checks a JSON payload against this version (see Set.Validate).
func (v *Version) Validate(payload []byte) error {
	switch v.Format {
	case FormatAvro:
		_, err := v.AvroBinary(payload)
		return err
	case FormatJSON:
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
		if err != nil {
			return v.mismatch("not JSON: " + err.Error())
		}
		if err := v.json.Validate(doc); err != nil {
			var ve *jsonschema.ValidationError
			if errors.As(err, &ve) {
				return v.mismatch(jsonReason(ve))
			}
			return v.mismatch(err.Error())
		}
		return nil
	}
	return fmt.Errorf("schema: %s: cannot validate format %s", v.Name(), v.Format)
}

// jsonReason is a validation error's leaf causes on one line each: "at
// '/amount_cents': minimum: got 0, want 1".
func jsonReason(ve *jsonschema.ValidationError) string {
	printer := message.NewPrinter(language.English)
	var leaves []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			leaves = append(leaves, fmt.Sprintf("at %q: %s", loc, e.ErrorKind.LocalizedString(printer)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return strings.Join(leaves, "; ")
}

func (v *Version) mismatch(reason string) error {
	return &ValidationError{EventType: v.EventType, Version: v.Name(), Reason: reason}
}

// AvroBinary encodes a JSON payload (plain JSON, as the writer stores it: a
// union's value as itself, not wrapped in {"type": value}) in Avro's binary
// encoding with this version, or says why it does not fit
// (*ValidationError). goavro's standard-JSON codec does the conversion.
func (v *Version) AvroBinary(payload []byte) ([]byte, error) {
	c, err := v.goavroCodec()
	if err != nil {
		return nil, err
	}
	native, rest, err := c.NativeFromTextual(payload)
	if err != nil {
		return nil, v.mismatch(err.Error())
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, v.mismatch(fmt.Sprintf("%d bytes after the JSON document", len(rest)))
	}
	b, err := c.BinaryFromNative(nil, native)
	if err != nil {
		return nil, v.mismatch(err.Error())
	}
	return b, nil
}

// goavroCodec builds the version's standard-JSON codec once.
func (v *Version) goavroCodec() (*goavro.Codec, error) {
	v.codecOnce.Do(func() {
		if v.Format != FormatAvro {
			v.codecErr = fmt.Errorf("schema: %s is not an Avro schema", v.Name())
			return
		}
		v.codec, v.codecErr = newAvroCodec(string(v.Source))
		if v.codecErr != nil {
			v.codecErr = fmt.Errorf("schema: %s: %w", v.Name(), v.codecErr)
		}
	})
	return v.codec, v.codecErr
}

// newAvroCodec is goavro's codec for plain JSON both ways (unions unwrapped).
func newAvroCodec(src string) (*goavro.Codec, error) {
	return goavro.NewCodecForStandardJSONFull(src)
}

// avroJSON decodes Avro binary data with codec back to plain JSON.
func avroJSON(c *goavro.Codec, data []byte) ([]byte, error) {
	native, rest, err := c.NativeFromBinary(data)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%d bytes after the Avro datum", len(rest))
	}
	b, err := c.TextualFromNative(nil, native)
	if err != nil {
		return nil, err
	}
	if !json.Valid(b) {
		return nil, errors.New("the Avro datum did not decode to JSON")
	}
	return b, nil
}

// codecState is the lazily built goavro codec a Version carries.
type codecState struct {
	codecOnce sync.Once
	codec     *goavro.Codec
	codecErr  error
}
