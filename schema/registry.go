package schema

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// RuleRegistry is the rule of a violation the registry reported without
// naming one: Apicurio's Confluent API answers is_compatible=false with no
// messages.
const RuleRegistry = "REGISTRY_INCOMPATIBLE"

// ErrRegistry is returned by CheckRegistry when the registry answers with
// an error other than "subject not found".
var ErrRegistry = errors.New("schema: registry")

// Registry is a Confluent Schema Registry API (Confluent's own, Apicurio's
// /apis/ccompat/v7, Karapace) that decides compatibility for `schema check
// --against URL`. Subjects are named for event types (see Subject).
type Registry struct {
	// URL is the API's base URL, e.g. http://registry:8081 or
	// http://apicurio:8080/apis/ccompat/v7.
	URL string
	// Client makes the calls. Defaults to http.DefaultClient; give it a
	// timeout.
	Client *http.Client
}

// Subject is the registry subject of an event type's history in format f:
// the event type itself for Avro (the record-name strategy: one subject per
// event type, whatever topics carry it) and "<event_type>-json" for JSON
// Schema, because a subject holds schemas of one type only.
func Subject(eventType string, f Format) string {
	if f == FormatJSON {
		return eventType + "-json"
	}
	return eventType
}

// CheckRegistry asks the registry whether the latest version of each of s's
// histories may be registered after the subject's versions, in the mode the
// registry has configured for the subject (POST
// /compatibility/subjects/{subject}/versions, which checks against every
// version a transitive mode names): the registry's own rules decide, for
// JSON Schema as for Avro. A subject the registry does not have yet has
// nothing to break.
func (r Registry) CheckRegistry(ctx context.Context, s *Set) (*Result, error) {
	res := &Result{}
	for _, name := range s.Types() {
		for _, f := range []Format{FormatAvro, FormatJSON} {
			v := s.History(name, f).Latest()
			if v == nil {
				continue
			}
			vs, err := r.check(ctx, v)
			if err != nil {
				return nil, fmt.Errorf("schema: check %s with the registry: %w", v.Name(), err)
			}
			res.Checked = append(res.Checked, v.Name())
			res.Violations = append(res.Violations, vs...)
		}
	}
	return res, nil
}

// compatibility is the body of POST /compatibility/... and its answer.
type compatibility struct {
	Schema       string   `json:"schema,omitempty"`
	SchemaType   string   `json:"schemaType,omitempty"`
	IsCompatible *bool    `json:"is_compatible,omitempty"`
	Messages     []string `json:"messages,omitempty"`
	ErrorCode    int      `json:"error_code,omitempty"`
	Message      string   `json:"message,omitempty"`
}

// Confluent's error code for an unknown subject (and Apicurio's).
const errSubjectNotFound = 40401

func (r Registry) check(ctx context.Context, v *Version) ([]Violation, error) {
	body := compatibility{Schema: string(v.Source)}
	if v.Format != FormatAvro {
		body.SchemaType = string(v.Format)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	u := strings.TrimRight(r.URL, "/") + "/compatibility/subjects/" + url.PathEscape(Subject(v.EventType, v.Format)) + "/versions?verbose=true"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	req.Header.Set("Accept", "application/vnd.schemaregistry.v1+json, application/json")
	client := r.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var got compatibility
	if err := json.Unmarshal(raw, &got); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrRegistry, resp.Status, bytes.TrimSpace(raw))
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && got.ErrorCode == errSubjectNotFound:
		return nil, nil
	case resp.StatusCode != http.StatusOK || got.IsCompatible == nil:
		return nil, fmt.Errorf("%w: %s: %s", ErrRegistry, resp.Status, bytes.TrimSpace(raw))
	case *got.IsCompatible:
		return nil, nil
	}
	viol := Violation{EventType: v.EventType, Format: v.Format, Version: v.Number, Rule: RuleRegistry,
		Detail: "the registry's verdict, in its mode for subject " + Subject(v.EventType, v.Format)}
	if len(got.Messages) == 0 {
		return []Violation{viol}, nil
	}
	out := make([]Violation, 0, len(got.Messages))
	for _, m := range got.Messages {
		x := viol
		x.Rule, x.Field = registryRule(m)
		x.Detail = "subject " + Subject(v.EventType, v.Format) + ": " + m
		out = append(out, x)
	}
	return out, nil
}

// registryRule reads the rule and field out of a Confluent verbose message:
// {errorType:'READER_FIELD_MISSING_DEFAULT_VALUE', description:'...',
// additionalInfo:'b'}.
func registryRule(m string) (rule, field string) {
	rule = RuleRegistry
	if _, rest, ok := strings.Cut(m, "errorType:'"); ok {
		rule, _, _ = strings.Cut(rest, "'")
	}
	if _, rest, ok := strings.Cut(m, "additionalInfo:'"); ok {
		field, _, _ = strings.Cut(rest, "'")
	}
	return rule, field
}
