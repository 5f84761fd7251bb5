// Package schema knows the shape of every event the service writes: it loads
// the schemas folder the service owns (schemas/<event_type>/vN.avsc and
// vN.json, one file per published version), maps each event type to its
// Avro and JSON Schema version history, and decides whether a new version
// breaks the readers of the earlier ones.
//
// It sits beside the pipeline, not in it: `outbox schema check` runs it in
// CI before a schema reaches a topic, and the writer (outbox/) and the sink
// will use the same Set for write-time validation and decoding once those are
// built. No stage imports another through it; it depends on no stage.
//
// Compatibility is the Confluent Schema Registry's: the modes are its modes
// (BACKWARD, FORWARD, FULL and their _TRANSITIVE forms, NONE) and a breaking
// change is named by the rule its Avro checker reports
// (READER_FIELD_MISSING_DEFAULT_VALUE, TYPE_MISMATCH, MISSING_ENUM_SYMBOLS,
// NAME_MISMATCH, FIXED_SIZE_MISMATCH, MISSING_UNION_BRANCH). The Avro
// decision itself is github.com/hamba/avro/v2's SchemaCompatibility, the
// Go port of Avro's reader/writer resolution rules; this package only says
// where in the schema the break is and in which direction. JSON Schema
// versions are parsed and compiled (a broken file fails Load), but no
// maintained Go library decides JSON Schema compatibility, so their
// compatibility is left to a registry (ErrNotChecked).
package schema
