package ingest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// lookupPointer resolves an RFC 6901 JSON pointer ("/data/object/id") in doc,
// a value decoded with json.Decoder.UseNumber. "" is the whole document. The
// second result is false when the pointer names nothing.
func lookupPointer(doc any, pointer string) (any, bool) {
	if pointer == "" {
		return doc, true
	}
	cur := doc
	for _, tok := range strings.Split(pointer[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[tok]
			if !ok {
				return nil, false
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(v) {
				return nil, false
			}
			cur = v[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// validPointer checks the syntax of a pointer in the configuration.
func validPointer(p string) error {
	if p != "" && !strings.HasPrefix(p, "/") {
		return fmt.Errorf("JSON pointer %q must start with /", p)
	}
	return nil
}

// scalarString is a JSON string or number as text; other values are not
// usable as ids or types.
func scalarString(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, s != ""
	case json.Number:
		return s.String(), true
	}
	return "", false
}
