package schema

import (
	"slices"
	"strings"

	"github.com/hamba/avro/v2"
)

// The rules a break is named by: Avro's SchemaIncompatibilityType, which is
// what Confluent Schema Registry (and Apicurio, and Karapace) report.
const (
	RuleReaderFieldMissingDefault = "READER_FIELD_MISSING_DEFAULT_VALUE"
	RuleTypeMismatch              = "TYPE_MISMATCH"
	RuleMissingEnumSymbols        = "MISSING_ENUM_SYMBOLS"
	RuleNameMismatch              = "NAME_MISMATCH"
	RuleFixedSizeMismatch         = "FIXED_SIZE_MISMATCH"
	RuleMissingUnionBranch        = "MISSING_UNION_BRANCH"
)

// avroBreak is why reader cannot decode writer's data, and where.
type avroBreak struct {
	rule    string
	field   string // dotted path of reader fields from the top record; "" for the top level
	message string // hamba's description
}

// avroCompatible asks hamba whether reader can decode data written with
// writer; when it cannot, it names the rule and the field. hamba decides;
// the walk below only narrows down which field its verdict is about, by
// asking it again about each matching field pair.
func avroCompatible(reader, writer avro.Schema) *avroBreak {
	sc := avro.NewSchemaCompatibility()
	err := sc.Compatible(reader, writer)
	if err == nil {
		return nil
	}
	var path []string
	r, w := reader, writer
	for {
		r, w = deref(r), deref(w)
		next := narrow(sc, r, w)
		if next == nil {
			break
		}
		path = append(path, next.name)
		r, w = next.reader, next.writer
		if e := sc.Compatible(r, w); e != nil {
			err = e
		}
	}
	msg := err.Error()
	b := &avroBreak{rule: avroRule(msg), message: msg}
	if b.rule == RuleReaderFieldMissingDefault {
		// "reader field X is missing in writer schema and has no default"
		if name, ok := strings.CutPrefix(msg, "reader field "); ok {
			name, _, _ = strings.Cut(name, " ")
			path = append(path, name)
		}
	}
	b.field = strings.Join(path, ".")
	return b
}

// step is one level down a reader/writer pair: a field, an array's items or
// a map's values.
type step struct {
	name           string
	reader, writer avro.Schema
}

// narrow returns the first child pair of r and w that hamba finds
// incompatible, or nil when the break is at this level.
func narrow(sc *avro.SchemaCompatibility, r, w avro.Schema) *step {
	switch {
	case r.Type() == avro.Record && w.Type() == avro.Record:
		wr := w.(*avro.RecordSchema)
		for _, f := range r.(*avro.RecordSchema).Fields() {
			wf := writerField(wr, f)
			if wf == nil {
				continue
			}
			if sc.Compatible(f.Type(), wf.Type()) != nil {
				return &step{name: f.Name(), reader: f.Type(), writer: wf.Type()}
			}
		}
	case r.Type() == avro.Array && w.Type() == avro.Array:
		return &step{name: "[]", reader: r.(*avro.ArraySchema).Items(), writer: w.(*avro.ArraySchema).Items()}
	case r.Type() == avro.Map && w.Type() == avro.Map:
		return &step{name: "{}", reader: r.(*avro.MapSchema).Values(), writer: w.(*avro.MapSchema).Values()}
	}
	return nil
}

// writerField is the writer's field a reader field reads: the same name, or
// one of the reader field's aliases (Avro's resolution rule).
func writerField(w *avro.RecordSchema, f *avro.Field) *avro.Field {
	for _, wf := range w.Fields() {
		if wf.Name() == f.Name() || slices.Contains(f.Aliases(), wf.Name()) {
			return wf
		}
	}
	return nil
}

func deref(s avro.Schema) avro.Schema {
	if r, ok := s.(*avro.RefSchema); ok {
		return r.Schema()
	}
	return s
}

// avroRule names hamba's description of a break by Avro's rule. hamba's
// messages are fixed strings in avro/v2's schema_compatibility.go; a message
// none of them matches is a TYPE_MISMATCH, the general case.
func avroRule(msg string) string {
	switch {
	case strings.Contains(msg, "is missing in writer schema and has no default"):
		return RuleReaderFieldMissingDefault
	case strings.Contains(msg, "is missing symbol"):
		return RuleMissingEnumSymbols
	case strings.Contains(msg, "names do not match"):
		return RuleNameMismatch
	case strings.Contains(msg, "fixed sizes do not match"):
		return RuleFixedSizeMismatch
	case strings.Contains(msg, "reader union lacking writer schema"):
		return RuleMissingUnionBranch
	default:
		return RuleTypeMismatch
	}
}
