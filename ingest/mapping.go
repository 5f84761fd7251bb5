package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Delivery sentinels, returned (wrapped) by parse; each answers 400.
var (
	// ErrNotJSON means the source needs a JSON body and this one is not JSON.
	ErrNotJSON = errors.New("body is not JSON")
	// ErrUnmapped means a value the mapping names is missing or unusable
	// (no delivery id, no entity id, a version that is not an integer).
	ErrUnmapped = errors.New("delivery does not fit the source's mapping")
)

// delivery is one webhook as ingest understands it.
type delivery struct {
	id          string
	contentType string
	// mapped: the delivery becomes a record; the fields below are set.
	mapped     bool
	entityType string
	entityID   string
	eventType  string
	version    int64
	hasVersion bool
	updatedAt  *time.Time
	object     []byte
}

// entityKey is the record's Kafka key: SOURCE.TYPE.ID.
func (d *delivery) entityKey(source string) string {
	return source + "." + d.entityType + "." + d.entityID
}

// parse reads the delivery id and, for a mapped source, the record's parts.
func (s *Source) parse(h http.Header, body []byte) (*delivery, error) {
	d := &delivery{contentType: "application/json"}
	var doc any
	if s.needsJSON() {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if !utf8.Valid(body) || dec.Decode(&doc) != nil || dec.More() {
			return nil, fmt.Errorf("%w: source %s reads its delivery id or mapping from the body (send Content-Type: application/json)", ErrNotJSON, s.Name)
		}
	} else {
		d.contentType = h.Get("Content-Type")
		if d.contentType == "" {
			d.contentType = "application/octet-stream"
		}
		if strings.Contains(strings.ToLower(d.contentType), "json") && !json.Valid(body) {
			// The writer validates JSON payloads: say so here, not as a 500.
			return nil, fmt.Errorf("%w: Content-Type says %s", ErrNotJSON, d.contentType)
		}
	}
	var err error
	if d.id, err = readString(s.DeliveryID, "delivery_id", h, doc); err != nil {
		return nil, err
	}
	if len(d.id) > 200 {
		return nil, fmt.Errorf("%w: delivery id is %d bytes, at most 200", ErrUnmapped, len(d.id))
	}
	if !s.mapped() {
		return d, nil
	}
	m := s.Mapping
	if s.Preset == PresetGitHub {
		if m, err = githubDefaults(m, h, doc); err != nil {
			return nil, err
		}
	}
	d.mapped = true
	if d.entityType, err = readString(m.EntityType, "entity_type", h, doc); err != nil {
		return nil, err
	}
	if d.entityID, err = readString(m.EntityID, "entity_id", h, doc); err != nil {
		return nil, err
	}
	if d.eventType, err = readString(m.EventType, "event_type", h, doc); err != nil {
		return nil, err
	}
	if m.Version != "" {
		if d.version, err = readVersion(m.Version, h, doc); err != nil {
			return nil, err
		}
		d.hasVersion = true
	}
	if m.UpdatedAt != "" {
		t, err := readTime(m.UpdatedAt, h, doc)
		if err != nil {
			return nil, err
		}
		d.updatedAt = &t
	}
	obj, ok := lookupPointer(doc, m.Object)
	if !ok {
		return nil, fmt.Errorf("%w: mapping.object %s is not in the body", ErrUnmapped, m.Object)
	}
	if d.object, err = marshalJSON(obj); err != nil {
		return nil, fmt.Errorf("ingest: encode record payload: %w", err)
	}
	return d, nil
}

// githubDefaults fills the GitHub mapping the configuration left empty: the
// entity is the body's object named after X-GitHub-Event ("issues" ->
// /issue, "pull_request" -> /pull_request), else /repository; its id and
// updated_at order it, and the event type is EVENT.ACTION.
func githubDefaults(m Mapping, h http.Header, doc any) (Mapping, error) {
	event := h.Get(headerGitHubEvent)
	if event == "" {
		return m, fmt.Errorf("%w: %s header missing", ErrUnmapped, headerGitHubEvent)
	}
	if m.EventType == "" {
		m.EventType = "header:" + headerGitHubEvent
		if a, ok := lookupPointer(doc, "/action"); ok {
			if s, ok := a.(string); ok && s != "" {
				m.EventType = Field("=" + event + "." + s)
			}
		}
	}
	if m.EntityID != "" && m.EntityType != "" {
		if m.Version == "" && m.UpdatedAt == "" {
			return m, fmt.Errorf("%w: github mapping sets entity_id without version or updated_at", ErrUnmapped)
		}
		return m, nil
	}
	key := ""
	for _, k := range []string{strings.TrimSuffix(event, "s"), event, "repository"} {
		if o, ok := lookupPointer(doc, "/"+k); ok {
			if obj, ok := o.(map[string]any); ok && obj["id"] != nil {
				key = k
				break
			}
		}
	}
	if key == "" {
		return m, fmt.Errorf("%w: no object for event %q in the body (configure mapping.entity_id)", ErrUnmapped, event)
	}
	m.EntityType = orField(m.EntityType, Field("="+key))
	m.EntityID = orField(m.EntityID, Field("/"+key+"/id"))
	if m.Version == "" && m.UpdatedAt == "" {
		m.UpdatedAt = Field("/" + key + "/updated_at")
	}
	if m.Object == "" {
		m.Object = "/" + key
	}
	return m, nil
}

// read resolves f: a header, a JSON pointer, or a constant "=literal".
func read(f Field, h http.Header, doc any) (any, bool) {
	if lit, ok := strings.CutPrefix(string(f), "="); ok {
		return lit, true
	}
	if name, ok := f.header(); ok {
		v := h.Get(name)
		return v, v != ""
	}
	return lookupPointer(doc, string(f))
}

func readString(f Field, what string, h http.Header, doc any) (string, error) {
	v, ok := read(f, h, doc)
	if !ok {
		return "", fmt.Errorf("%w: %s %s is missing", ErrUnmapped, what, f)
	}
	s, ok := scalarString(v)
	if !ok {
		return "", fmt.Errorf("%w: %s %s is not a string or number", ErrUnmapped, what, f)
	}
	return s, nil
}

// readVersion reads an integer version: a JSON integer or a string of digits.
func readVersion(f Field, h http.Header, doc any) (int64, error) {
	v, ok := read(f, h, doc)
	if !ok {
		return 0, fmt.Errorf("%w: version %s is missing", ErrUnmapped, f)
	}
	s, _ := scalarString(v)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: version %s is %v, not an integer", ErrUnmapped, f, v)
	}
	return n, nil
}

// readTime reads an updated_at: an RFC 3339 string or Unix seconds.
func readTime(f Field, h http.Header, doc any) (time.Time, error) {
	v, ok := read(f, h, doc)
	if !ok {
		return time.Time{}, fmt.Errorf("%w: updated_at %s is missing", ErrUnmapped, f)
	}
	switch t := v.(type) {
	case json.Number:
		secs, err := t.Float64()
		if err == nil && !math.IsInf(secs, 0) && !math.IsNaN(secs) {
			whole, frac := math.Modf(secs)
			return time.Unix(int64(whole), int64(frac*1e9)).UTC(), nil
		}
	case string:
		if ts, err := time.Parse(time.RFC3339Nano, t); err == nil {
			return ts, nil
		}
		if secs, err := strconv.ParseInt(t, 10, 64); err == nil {
			return time.Unix(secs, 0).UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: updated_at %s is %v, not RFC 3339 or Unix seconds", ErrUnmapped, f, v)
}

// marshalJSON encodes v without HTML escaping, numbers as they came.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
