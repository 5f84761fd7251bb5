// Package topicspec is the model behind `outbox topics apply`: a topics.yaml file
// that names every topic of the pipeline with its kind (events with time
// retention, compacted records and checkpoints, commands, retry tiers, dead
// letters), and the plan/apply logic that brings a Kafka cluster to it with
// kadm. It sits between cmd/outbox (which parses flags and prints) and the
// cluster; the pipeline stages never import it.
//
// Apply is idempotent: MakePlan compares the file with the cluster and returns
// only the differences, so applying the same file twice changes nothing the
// second time.
//
// Apply never applies half a plan that MakePlan could have known would fail.
// MakePlan checks, before anything changes: the replication factor of every
// topic it creates or grows against the cluster's live brokers, every
// min.insync.replicas it sets against the replication factor the topic will
// have, and every change with the brokers themselves (CreateTopics,
// CreatePartitions and IncrementalAlterConfigs with validate_only). A plan
// with such a problem is refused as a whole (Plan.Err, ErrRefused): Apply
// changes nothing.
//
// # Keyed topics
//
// A topic is keyed when its consumers rely on the record key choosing the
// partition: the producer's partitioner maps a key to hash(key) mod the
// partition count, so every record of one key sits in one partition, in
// order. Outbox event topics are keyed by aggregate id (per-aggregate commit
// order), commands and retry tiers carry the same keys (a sink that holds
// later events of a key while one retries), and compacted topics (records,
// checkpoints, replay ledgers) keep the newest record per key only within a
// partition. Raising the partition count of a keyed topic moves most keys to
// another partition: records with an existing key go to a different
// partition than that key's earlier records, so consumers lose per-key order
// across the change (and a compacted topic keeps a stale copy of the key in
// its old partition). MakePlan therefore refuses such a change unless
// AllowRepartition is given, and always names it in the plan. A topic that
// never held a record (every partition's high watermark is 0) has no existing
// key and may grow freely.
//
// Every kind is keyed except dead_letter and quarantine, whose records are
// read by position and by people, with no per-key order to keep. A topic in
// the file may say `keyed: false` (its consumers do not need per-key order,
// or its records carry no key) or `keyed: true`; a compacted kind cannot be
// unkeyed, since Kafka compacts by key.
package topicspec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/outboxrelay/outbox/envelope"
)

// ErrInvalid is returned by Load, Parse, File.Specs and MakePlan when the
// topics file, or an option of MakePlan, is invalid: a YAML error, an unknown
// field, no topics, a partition count below 1, a replication factor that is
// neither 1 or more nor -1, a min.insync.replicas above the replication
// factor, a topic listed twice, and the like. The message names the topic and
// the field.
var ErrInvalid = errors.New("invalid topics file")

// Kinds of topic in a topics.yaml file. The kind decides the cleanup policy.
const (
	// KindEvent holds outbox events (facts): cleanup.policy=delete with retention.ms.
	KindEvent = "event"
	// KindRecord holds the latest state per key: cleanup.policy=compact.
	KindRecord = "record"
	// KindCommand holds commands produced by the eos transform: delete with retention.
	KindCommand = "command"
	// KindCheckpoint is the relay's checkpoint topic, keyed by slot: compacted.
	KindCheckpoint = "checkpoint"
	// KindRetry is a retry tier topic of the sink: delete with retention.
	KindRetry = "retry"
	// KindDeadLetter is a dead-letter topic: delete with (long) retention.
	KindDeadLetter = "dead_letter"
	// KindQuarantine receives dead letters replayed too often: delete with retention.
	KindQuarantine = "quarantine"
	// KindReplayLedger is the compacted topic in which `outbox dlq replay`
	// records which dead letters it has replayed.
	KindReplayLedger = "replay_ledger"
)

// BrokerDefault is the replication factor that leaves the choice to the
// brokers (their default.replication.factor), in the file
// (`replication_factor: -1`) and in a Spec.
const BrokerDefault = -1

// compacted reports whether kind is a compacted kind.
func compacted(kind string) bool {
	return kind == KindRecord || kind == KindCheckpoint || kind == KindReplayLedger
}

// keyedKind reports whether topics of kind are keyed unless the file says
// otherwise (see the package doc).
func keyedKind(kind string) bool {
	return kind != KindDeadLetter && kind != KindQuarantine
}

func knownKind(kind string) bool {
	switch kind {
	case KindEvent, KindRecord, KindCommand, KindCheckpoint, KindRetry, KindDeadLetter, KindQuarantine, KindReplayLedger:
		return true
	}
	return false
}

// File is a topics.yaml document.
type File struct {
	// Defaults apply to every topic that does not set the field itself.
	Defaults Defaults `yaml:"defaults"`
	// Topics are the topics to create or update. At least one is required.
	Topics []Topic `yaml:"topics"`
}

// Defaults are the values a topic inherits. A field left out is unset; a
// field that is present must be valid (`partitions: 0` is an error, not
// "unset").
type Defaults struct {
	// Partitions of a new topic, 1 or more. Defaults to 1.
	Partitions *int32 `yaml:"partitions"`
	// ReplicationFactor of a new topic: 1 or more, or -1 (BrokerDefault) for
	// the brokers' default.replication.factor. Defaults to -1.
	ReplicationFactor *int16 `yaml:"replication_factor"`
	// Retention of delete-policy topics: a Go duration, a number of days ("7d"),
	// or "forever". Defaults to 7d.
	Retention string `yaml:"retention"`
	// Configs are extra topic configs for every topic (e.g. min.insync.replicas).
	Configs map[string]string `yaml:"configs"`
}

// Topic is one topic of the file.
type Topic struct {
	// Name is the topic name. Required.
	Name string `yaml:"name"`
	// Kind is one of the Kind constants. Required.
	Kind string `yaml:"kind"`
	// Partitions overrides Defaults.Partitions; 1 or more. Checkpoint topics
	// default to 1.
	Partitions *int32 `yaml:"partitions"`
	// ReplicationFactor overrides Defaults.ReplicationFactor: 1 or more, or -1.
	ReplicationFactor *int16 `yaml:"replication_factor"`
	// Keyed says whether consumers rely on the key choosing the partition
	// (see the package doc). Defaults to true for every kind but dead_letter
	// and quarantine; compacted kinds are always keyed.
	Keyed *bool `yaml:"keyed"`
	// Retention overrides Defaults.Retention. Not allowed on compacted kinds.
	Retention string `yaml:"retention"`
	// Configs are extra topic configs, over Defaults.Configs; they win over
	// what the kind implies.
	Configs map[string]string `yaml:"configs"`
}

// Spec is a topic as it should exist on the cluster, after defaults.
type Spec struct {
	// Name is the topic name.
	Name string
	// Kind is the topic's kind, one of the Kind constants.
	Kind string
	// Partitions is the partition count the topic must have at least.
	Partitions int32
	// ReplicationFactor of a new topic; -1 (BrokerDefault) takes the broker default.
	ReplicationFactor int16
	// Unkeyed says that no consumer relies on the key choosing the partition,
	// so MakePlan may raise the partition count without AllowRepartition. The
	// zero value, keyed, is the safe one (see the package doc).
	Unkeyed bool
	// Configs are the topic configs to set, cleanup policy and retention included.
	Configs map[string]string
}

// Load reads and validates a topics.yaml file. Errors name the file.
func Load(path string) (File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("topicspec: %w", err)
	}
	f, err := Parse(bytes.NewReader(b))
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Parse decodes and validates a topics.yaml document. Unknown fields, a
// second YAML document and an empty document are errors (ErrInvalid), so a
// typo does not silently fall back to a default.
func Parse(r io.Reader) (File, error) {
	var f File
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return File{}, fmt.Errorf("topicspec: %w: %w", ErrInvalid, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return File{}, fmt.Errorf("topicspec: %w: more than one YAML document (a stray ---?); put every topic under one topics: list", ErrInvalid)
	}
	if _, err := f.Specs(); err != nil {
		return File{}, err
	}
	return f, nil
}

// invalid returns an ErrInvalid error about the file.
func invalid(format string, args ...any) error {
	return fmt.Errorf("topicspec: %w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Specs resolves defaults and kinds into the desired state of each topic, in
// file order. It fails (ErrInvalid) on a file without topics, an unknown
// kind, a bad name, partition count, replication factor, min.insync.replicas
// or retention, or a topic named twice.
func (f File) Specs() ([]Spec, error) {
	if len(f.Topics) == 0 {
		return nil, invalid("no topics: the file is empty or has no topics: list")
	}
	if p := f.Defaults.Partitions; p != nil && *p < 1 {
		return nil, invalid("defaults: partitions %d: want 1 or more", *p)
	}
	if rf := f.Defaults.ReplicationFactor; rf != nil && !validRF(*rf) {
		return nil, invalid("defaults: replication_factor %d: want 1 or more, or -1 for the brokers' default.replication.factor", *rf)
	}
	seen := map[string]bool{}
	out := make([]Spec, 0, len(f.Topics))
	for i, t := range f.Topics {
		if err := envelope.ValidTopic(t.Name); err != nil {
			return nil, invalid("topics[%d]: %v", i, err)
		}
		if seen[t.Name] {
			return nil, invalid("topic %s is listed twice", t.Name)
		}
		seen[t.Name] = true
		s, err := f.spec(t)
		if err != nil {
			return nil, invalid("topic %s: %v", t.Name, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// spec resolves one topic of the file.
func (f File) spec(t Topic) (Spec, error) {
	if t.Kind == "" {
		return Spec{}, errors.New("kind is required: one of event, record, command, checkpoint, retry, dead_letter, quarantine, replay_ledger")
	}
	if !knownKind(t.Kind) {
		return Spec{}, fmt.Errorf("kind %q is not one of event, record, command, checkpoint, retry, dead_letter, quarantine, replay_ledger", t.Kind)
	}
	s := Spec{Name: t.Name, Kind: t.Kind, Partitions: 1, ReplicationFactor: BrokerDefault, Configs: map[string]string{}}
	switch {
	case t.Partitions != nil:
		if *t.Partitions < 1 {
			return Spec{}, fmt.Errorf("partitions %d: want 1 or more (leave it out for the default)", *t.Partitions)
		}
		s.Partitions = *t.Partitions
	case t.Kind == KindCheckpoint:
	case f.Defaults.Partitions != nil:
		s.Partitions = *f.Defaults.Partitions
	}
	switch {
	case t.ReplicationFactor != nil:
		if !validRF(*t.ReplicationFactor) {
			return Spec{}, fmt.Errorf("replication_factor %d: want 1 or more, or -1 for the brokers' default.replication.factor", *t.ReplicationFactor)
		}
		s.ReplicationFactor = *t.ReplicationFactor
	case f.Defaults.ReplicationFactor != nil:
		s.ReplicationFactor = *f.Defaults.ReplicationFactor
	}
	keyed := keyedKind(t.Kind)
	if t.Keyed != nil {
		if !*t.Keyed && compacted(t.Kind) {
			return Spec{}, fmt.Errorf("keyed: false on a %s topic: a compacted topic is always keyed (Kafka keeps the newest record per key)", t.Kind)
		}
		keyed = *t.Keyed
	}
	s.Unkeyed = !keyed
	for k, v := range f.Defaults.Configs {
		s.Configs[k] = v
	}
	if compacted(t.Kind) {
		if t.Retention != "" {
			return Spec{}, fmt.Errorf("retention %q on a %s topic: compacted topics keep the newest record per key and do not delete by time (set configs: {cleanup.policy: \"compact,delete\", retention.ms: ...} for both)", t.Retention, t.Kind)
		}
		s.Configs["cleanup.policy"] = "compact"
	} else {
		ret := t.Retention
		if ret == "" {
			ret = f.Defaults.Retention
		}
		if ret == "" {
			ret = "7d"
		}
		ms, err := RetentionMillis(ret)
		if err != nil {
			return Spec{}, err
		}
		s.Configs["cleanup.policy"] = "delete"
		s.Configs["retention.ms"] = strconv.FormatInt(ms, 10)
	}
	for k, v := range t.Configs {
		s.Configs[k] = v
	}
	misr, ok, err := minInsync(s)
	if err != nil {
		return Spec{}, err
	}
	if ok && s.ReplicationFactor > 0 && misr > int(s.ReplicationFactor) {
		return Spec{}, fmt.Errorf("min.insync.replicas %d is above replication_factor %d: %s", misr, s.ReplicationFactor, misrConsequence)
	}
	return s, nil
}

// validRF reports whether rf is a replication factor the file may name.
func validRF(rf int16) bool { return rf >= 1 || rf == BrokerDefault }

// misrConsequence is why min.insync.replicas must not exceed the replicas.
const misrConsequence = "every acks=all write (transactional producers always use acks=all) would fail with NOT_ENOUGH_REPLICAS"

// minInsync returns the spec's min.insync.replicas, if it sets one.
func minInsync(s Spec) (int, bool, error) {
	v, ok := s.Configs["min.insync.replicas"]
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 {
		return 0, false, fmt.Errorf("min.insync.replicas %q: want a whole number, 1 or more", v)
	}
	return n, true, nil
}

// RetentionMillis parses a retention: a Go duration ("36h"), whole days ("7d"),
// or "forever" (-1, Kafka's unlimited retention).
func RetentionMillis(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "forever" || s == "-1" {
		return -1, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("retention %q: want a positive number of days", s)
		}
		return int64(n) * int64(24*time.Hour/time.Millisecond), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("retention %q: want a duration like 36h, days like 7d, or forever", s)
	}
	return d.Milliseconds(), nil
}

// configString renders configs sorted by key, for the plan's output.
func configString(cfg map[string]string) string {
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + cfg[k]
	}
	return strings.Join(parts, " ")
}
