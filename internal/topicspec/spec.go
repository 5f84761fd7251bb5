// Package topicspec is the model behind `outbox topics apply`: a topics.yaml file
// that names every topic of the pipeline with its kind (events with time
// retention, compacted records and checkpoints, commands, retry tiers, dead
// letters), and the plan/apply logic that brings a Kafka cluster to it with
// kadm. It sits between cmd/outbox (which parses flags and prints) and the
// cluster; the pipeline stages never import it.
//
// Apply is idempotent: Plan compares the file with the cluster and returns only
// the differences, so applying the same file twice changes nothing the second
// time.
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

// compacted reports whether kind is a compacted kind.
func compacted(kind string) bool {
	return kind == KindRecord || kind == KindCheckpoint || kind == KindReplayLedger
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
	// Topics are the topics to create or update.
	Topics []Topic `yaml:"topics"`
}

// Defaults are the values a topic inherits.
type Defaults struct {
	// Partitions of a new topic. Defaults to 1.
	Partitions int32 `yaml:"partitions"`
	// ReplicationFactor of a new topic; -1 or 0 takes the broker default.
	ReplicationFactor int16 `yaml:"replication_factor"`
	// Retention of delete-policy topics: a Go duration, a number of days ("7d"),
	// or "forever". Defaults to 7d.
	Retention string `yaml:"retention"`
	// Configs are extra topic configs for every topic (e.g. min.insync.replicas).
	Configs map[string]string `yaml:"configs"`
}

// Topic is one topic of the file.
type Topic struct {
	// Name is the topic name.
	Name string `yaml:"name"`
	// Kind is one of the Kind constants. Required.
	Kind string `yaml:"kind"`
	// Partitions overrides Defaults.Partitions. Checkpoint topics default to 1.
	Partitions int32 `yaml:"partitions"`
	// ReplicationFactor overrides Defaults.ReplicationFactor.
	ReplicationFactor int16 `yaml:"replication_factor"`
	// Retention overrides Defaults.Retention; ignored for compacted kinds.
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
	// ReplicationFactor of a new topic; -1 takes the broker default.
	ReplicationFactor int16
	// Configs are the topic configs to set, cleanup policy and retention included.
	Configs map[string]string
}

// Load reads and validates a topics.yaml file.
func Load(path string) (File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("topicspec: %w", err)
	}
	return Parse(bytes.NewReader(b))
}

// Parse decodes and validates a topics.yaml document. Unknown fields are errors,
// so a typo does not silently fall back to a default.
func Parse(r io.Reader) (File, error) {
	var f File
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return File{}, fmt.Errorf("topicspec: parse: %w", err)
	}
	if _, err := f.Specs(); err != nil {
		return File{}, err
	}
	return f, nil
}

// Specs resolves defaults and kinds into the desired state of each topic, in
// file order. It fails on an unknown kind, a bad name or retention, or a topic
// named twice.
func (f File) Specs() ([]Spec, error) {
	seen := map[string]bool{}
	out := make([]Spec, 0, len(f.Topics))
	for i, t := range f.Topics {
		if err := envelope.ValidTopic(t.Name); err != nil {
			return nil, fmt.Errorf("topicspec: topics[%d]: %w", i, err)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("topicspec: topic %s is listed twice", t.Name)
		}
		seen[t.Name] = true
		if !knownKind(t.Kind) {
			return nil, fmt.Errorf("topicspec: topic %s: kind %q is not one of event, record, command, checkpoint, retry, dead_letter, quarantine, replay_ledger", t.Name, t.Kind)
		}
		s := Spec{Name: t.Name, Kind: t.Kind, Partitions: t.Partitions, ReplicationFactor: t.ReplicationFactor, Configs: map[string]string{}}
		if s.Partitions <= 0 {
			s.Partitions = f.Defaults.Partitions
			if t.Kind == KindCheckpoint {
				s.Partitions = 1
			}
		}
		if s.Partitions <= 0 {
			s.Partitions = 1
		}
		if s.ReplicationFactor == 0 {
			s.ReplicationFactor = f.Defaults.ReplicationFactor
		}
		if s.ReplicationFactor <= 0 {
			s.ReplicationFactor = -1
		}
		for k, v := range f.Defaults.Configs {
			s.Configs[k] = v
		}
		if compacted(t.Kind) {
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
				return nil, fmt.Errorf("topicspec: topic %s: %w", t.Name, err)
			}
			s.Configs["cleanup.policy"] = "delete"
			s.Configs["retention.ms"] = strconv.FormatInt(ms, 10)
		}
		for k, v := range t.Configs {
			s.Configs[k] = v
		}
		out = append(out, s)
	}
	return out, nil
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
