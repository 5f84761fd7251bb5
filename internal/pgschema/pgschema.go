// Package pgschema names the Postgres schema that holds the outbox tables:
// its default and the rule a name must follow. It is the small, dependency-free
// part of migrations that the writer library needs too, so that importing
// outbox does not link goose and the database drivers it brings.
package pgschema

import (
	"errors"
	"fmt"
	"regexp"
)

// Default is the schema the tables live in when none is named.
const Default = "outbox"

// ErrBadSchema is returned by Validate when a schema name is not a plain SQL
// identifier.
var ErrBadSchema = errors.New("schema must match [a-z_][a-z0-9_]{0,62}")

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Validate reports whether name can be used as the outbox schema. Names are
// kept to lower-case identifiers so they need no quoting in any tool a DBA uses.
// The error wraps ErrBadSchema.
func Validate(name string) error {
	if !schemaRE.MatchString(name) {
		return fmt.Errorf("%w, got %q", ErrBadSchema, name)
	}
	return nil
}
