package schema

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrNotChecked is returned by the checks for a format whose compatibility
// this package does not decide (JSON Schema): no maintained Go library
// implements JSON Schema compatibility rules, so they are left to a
// registry (`outbox schema check --against URL`).
var ErrNotChecked = errors.New("schema: compatibility not checked locally")

// Rules of this package's own, for the folder's history rather than for
// reader/writer compatibility: a registry never sees these, because it never
// lets a registered version change or vanish.
const (
	// RuleVersionRewritten: a published version's file changed. Publish a
	// new version instead.
	RuleVersionRewritten = "VERSION_REWRITTEN"
	// RuleVersionRemoved: a published version's file is gone.
	RuleVersionRemoved = "VERSION_REMOVED"
)

// Direction says which side reads which data in a violation.
type Direction string

// The two directions a mode may ask for.
const (
	// NewReadsOld: the new version, as reader, must decode data written
	// with the old one (BACKWARD).
	NewReadsOld Direction = "BACKWARD"
	// OldReadsNew: the old version, as reader, must decode data written
	// with the new one (FORWARD).
	OldReadsNew Direction = "FORWARD"
)

// Violation is one breaking change: a new version that does not satisfy the
// mode against an earlier version.
type Violation struct {
	// EventType, Format and Version say which version breaks.
	EventType string
	Format    Format
	Version   int
	// Against is the earlier version it breaks; 0 for a registry's verdict
	// (the registry knows which of its versions).
	Against int
	// Direction is the half of the mode that fails; empty for the folder
	// rules (RuleVersionRewritten, RuleVersionRemoved) and for a registry's
	// verdict.
	Direction Direction
	// Rule is the registry's name for the break (RuleTypeMismatch, ...).
	Rule string
	// Field is the dotted path of the field the break is at, in the reader
	// schema; empty when it is the whole schema.
	Field string
	// Detail is the checker's own description.
	Detail string
}

// String is the line `outbox schema check` prints.
func (v Violation) String() string {
	where := ""
	if v.Field != "" {
		where = fmt.Sprintf(" at field %q", v.Field)
	}
	switch {
	case v.Rule == RuleVersionRewritten || v.Rule == RuleVersionRemoved:
		return fmt.Sprintf("%s v%d (%s): %s: published versions are immutable; add v%d instead", v.EventType, v.Version, v.Format, v.Rule, v.Against)
	case v.Direction == "":
		// The registry's verdict: in its mode, against its versions.
		return fmt.Sprintf("%s v%d (%s): %s%s (%s)", v.EventType, v.Version, v.Format, v.Rule, where, v.Detail)
	}
	reader, writer := "new", "old"
	if v.Direction == OldReadsNew {
		reader, writer = "old", "new"
	}
	return fmt.Sprintf("%s v%d (%s) against v%d: %s: %s%s (the %s schema reading data written with the %s one: %s)",
		v.EventType, v.Version, v.Format, v.Against, v.Direction, v.Rule, where, reader, writer, v.Detail)
}

// Check checks next against earlier (oldest first) in mode: against the
// latest earlier version, or every one for a transitive mode. It returns the
// violations, none when next is compatible, and ErrNotChecked for a format
// this package does not decide.
func Check(mode Mode, earlier History, next *Version) ([]Violation, error) {
	if mode == None || len(earlier) == 0 {
		return nil, nil
	}
	if next.Format != FormatAvro {
		return nil, fmt.Errorf("%w: %s", ErrNotChecked, next.Name())
	}
	against := earlier[len(earlier)-1:]
	if mode.Transitive() {
		against = earlier
	}
	var out []Violation
	for i := len(against) - 1; i >= 0; i-- {
		old := against[i]
		if mode.Backward() {
			if b := avroCompatible(next.avro, old.avro); b != nil {
				out = append(out, violation(next, old, NewReadsOld, b))
			}
		}
		if mode.Forward() {
			if b := avroCompatible(old.avro, next.avro); b != nil {
				out = append(out, violation(next, old, OldReadsNew, b))
			}
		}
	}
	return out, nil
}

func violation(next, old *Version, d Direction, b *avroBreak) Violation {
	return Violation{EventType: next.EventType, Format: next.Format, Version: next.Number, Against: old.Number,
		Direction: d, Rule: b.rule, Field: b.field, Detail: b.message}
}

// Result is what a check of many versions found.
type Result struct {
	// Violations are the breaking changes.
	Violations []Violation
	// Checked are the versions checked, by Name.
	Checked []string
	// NotChecked are the versions left unchecked (ErrNotChecked), by Name.
	NotChecked []string
}

func (r *Result) add(mode Mode, earlier History, next *Version) error {
	vs, err := Check(mode, earlier, next)
	switch {
	case errors.Is(err, ErrNotChecked):
		r.NotChecked = append(r.NotChecked, next.Name())
		return nil
	case err != nil:
		return err
	}
	r.Checked = append(r.Checked, next.Name())
	r.Violations = append(r.Violations, vs...)
	return nil
}

// CheckHistory checks every version of every history in s against the
// versions before it: the folder's own history, as the registry would have
// seen it registered in order.
func CheckHistory(mode Mode, s *Set) (*Result, error) {
	r := &Result{}
	for _, name := range s.Types() {
		t := s.types[name]
		for _, f := range []Format{FormatAvro, FormatJSON} {
			h := t.Histories[f]
			for i := 1; i < len(h); i++ {
				if err := r.add(mode, h[:i], h[i]); err != nil {
					return nil, err
				}
			}
		}
	}
	return r, nil
}

// CheckChanges checks what changed from old (the folder at an earlier
// revision) to cur: each version cur adds is checked against the versions
// before it, and a version old had must be in cur unchanged
// (RuleVersionRewritten, RuleVersionRemoved). Event types and formats new
// in cur have nothing to break and are only checked within themselves.
func CheckChanges(mode Mode, old, cur *Set) (*Result, error) {
	r := &Result{}
	for _, name := range old.Types() {
		for f, oh := range old.types[name].Histories {
			ch := cur.History(name, f)
			for _, ov := range oh {
				switch {
				case ov.Number > len(ch):
					r.Violations = append(r.Violations, Violation{EventType: name, Format: f, Version: ov.Number, Against: len(oh) + 1, Rule: RuleVersionRemoved,
						Detail: ov.Path + " is gone"})
				case !bytes.Equal(ov.Source, ch[ov.Number-1].Source):
					r.Violations = append(r.Violations, Violation{EventType: name, Format: f, Version: ov.Number, Against: len(oh) + 1, Rule: RuleVersionRewritten,
						Detail: ov.Path + " changed"})
				}
			}
		}
	}
	for _, name := range cur.Types() {
		for _, f := range []Format{FormatAvro, FormatJSON} {
			ch := cur.History(name, f)
			oh := old.History(name, f)
			for i := len(oh); i < len(ch); i++ {
				if i == 0 {
					continue
				}
				// Earlier versions as published: old's where it has them.
				earlier := append(History{}, oh...)
				earlier = append(earlier, ch[len(oh):i]...)
				if err := r.add(mode, earlier, ch[i]); err != nil {
					return nil, err
				}
			}
		}
	}
	return r, nil
}
