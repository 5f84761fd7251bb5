package schema

import (
	"errors"
	"fmt"
	"strings"
)

// Mode is a compatibility mode, named and meant as in Confluent Schema
// Registry: which earlier versions a new version is checked against, and in
// which direction.
type Mode string

// The modes. BACKWARD: the new version reads data written with the latest
// earlier one (consumers upgrade first). FORWARD: the latest earlier version
// reads data written with the new one (producers upgrade first). FULL: both.
// The _TRANSITIVE forms check against every earlier version, not only the
// latest. NONE checks nothing.
const (
	Backward           Mode = "BACKWARD"
	BackwardTransitive Mode = "BACKWARD_TRANSITIVE"
	Forward            Mode = "FORWARD"
	ForwardTransitive  Mode = "FORWARD_TRANSITIVE"
	Full               Mode = "FULL"
	FullTransitive     Mode = "FULL_TRANSITIVE"
	None               Mode = "NONE"
)

// Modes are every mode, in the registry's order.
var Modes = []Mode{Backward, BackwardTransitive, Forward, ForwardTransitive, Full, FullTransitive, None}

// ErrMode is returned by ParseMode for a name that is no mode.
var ErrMode = errors.New("schema: unknown compatibility mode")

// ParseMode reads a mode name, case-insensitively. The empty name is
// BACKWARD, the registry's default.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return Backward, nil
	}
	m := Mode(strings.ToUpper(strings.TrimSpace(s)))
	for _, known := range Modes {
		if m == known {
			return m, nil
		}
	}
	return "", fmt.Errorf("%w %q: use one of %s", ErrMode, s, joinModes())
}

func joinModes() string {
	names := make([]string, len(Modes))
	for i, m := range Modes {
		names[i] = string(m)
	}
	return strings.Join(names, ", ")
}

// Transitive reports whether m checks against every earlier version.
func (m Mode) Transitive() bool { return strings.HasSuffix(string(m), "_TRANSITIVE") }

// Backward reports whether m wants the new version to read the old data.
func (m Mode) Backward() bool {
	return strings.HasPrefix(string(m), "BACKWARD") || strings.HasPrefix(string(m), "FULL")
}

// Forward reports whether m wants the old versions to read the new data.
func (m Mode) Forward() bool {
	return strings.HasPrefix(string(m), "FORWARD") || strings.HasPrefix(string(m), "FULL")
}
