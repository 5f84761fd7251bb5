package topicspec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Action is what a Change does to the cluster.
type Action int

// Actions of a plan.
const (
	// ActionCreate creates a missing topic with its partitions, replication
	// factor and configs.
	ActionCreate Action = iota + 1
	// ActionAddPartitions raises a topic's partition count. Kafka cannot lower it.
	ActionAddPartitions
	// ActionSetConfig sets one topic config (incremental alter, other configs kept).
	ActionSetConfig
	// ActionManual is a difference apply does not fix: fewer partitions than
	// the cluster has, or another replication factor (which needs a partition
	// reassignment). It is printed, never applied.
	ActionManual
)

// Change is one difference between the file and the cluster.
type Change struct {
	// Topic is the topic the change is for.
	Topic string
	// Action is what the change does.
	Action Action
	// Key is the config name for ActionSetConfig.
	Key string
	// From and To are the old and new value ("" From: not set).
	From, To string
	// Spec is the whole desired topic, for ActionCreate.
	Spec Spec
	// Reason explains an ActionManual change.
	Reason string
}

// String renders the change as one diff line: "+" create, "~" update, "!" manual.
func (c Change) String() string {
	switch c.Action {
	case ActionCreate:
		rf := "broker default"
		if c.Spec.ReplicationFactor > 0 {
			rf = strconv.Itoa(int(c.Spec.ReplicationFactor))
		}
		return fmt.Sprintf("+ %s: create (%s) partitions=%d replication_factor=%s %s",
			c.Topic, c.Spec.Kind, c.Spec.Partitions, rf, configString(c.Spec.Configs))
	case ActionAddPartitions:
		return fmt.Sprintf("~ %s: partitions %s -> %s", c.Topic, c.From, c.To)
	case ActionSetConfig:
		from := c.From
		if from == "" {
			from = "(default)"
		}
		return fmt.Sprintf("~ %s: %s %s -> %s", c.Topic, c.Key, from, c.To)
	default:
		return fmt.Sprintf("! %s: %s (not applied)", c.Topic, c.Reason)
	}
}

// Plan is the set of changes that brings the cluster to the file.
type Plan struct {
	// Changes in file order, per topic: create, partitions, configs, manual.
	Changes []Change
	// UpToDate counts the topics that need nothing.
	UpToDate int
}

// Pending reports how many changes Apply would make (manual ones excluded).
func (p Plan) Pending() int {
	n := 0
	for _, c := range p.Changes {
		if c.Action != ActionManual {
			n++
		}
	}
	return n
}

// Write prints the plan as a diff, one change a line, and a summary line.
func (p Plan) Write(w io.Writer) error {
	for _, c := range p.Changes {
		if _, err := fmt.Fprintln(w, c.String()); err != nil {
			return fmt.Errorf("topicspec: write plan: %w", err)
		}
	}
	_, err := fmt.Fprintf(w, "%d change(s), %d topic(s) up to date\n", p.Pending(), p.UpToDate)
	if err != nil {
		return fmt.Errorf("topicspec: write plan: %w", err)
	}
	return nil
}

// MakePlan compares the desired topics with the cluster that cl talks to.
// Only the configs the file names are compared; other configs are left alone.
// It reads metadata uncached (kadm caches it for seconds), so a plan made
// right after Apply sees Apply's work.
func MakePlan(ctx context.Context, cl *kgo.Client, specs []Spec) (Plan, error) {
	adm := kadm.NewClient(cl)
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	details, err := topicDetails(ctx, cl, names)
	if err != nil {
		return Plan{}, err
	}
	var existing []string
	for _, s := range specs {
		if _, ok := details[s.Name]; ok {
			existing = append(existing, s.Name)
		}
	}
	configs := map[string]map[string]string{}
	if len(existing) > 0 {
		rcs, err := adm.DescribeTopicConfigs(ctx, existing...)
		if err != nil {
			return Plan{}, fmt.Errorf("topicspec: describe configs: %w", err)
		}
		for _, rc := range rcs {
			if rc.Err != nil {
				return Plan{}, fmt.Errorf("topicspec: describe configs of %s: %w", rc.Name, rc.Err)
			}
			m := map[string]string{}
			for _, c := range rc.Configs {
				m[c.Key] = c.MaybeValue()
			}
			configs[rc.Name] = m
		}
	}

	var p Plan
	for _, s := range specs {
		d, ok := details[s.Name]
		if !ok {
			p.Changes = append(p.Changes, Change{Topic: s.Name, Action: ActionCreate, Spec: s})
			continue
		}
		before := len(p.Changes)
		have := d.partitions
		switch {
		case have < s.Partitions:
			p.Changes = append(p.Changes, Change{Topic: s.Name, Action: ActionAddPartitions,
				From: strconv.Itoa(int(have)), To: strconv.Itoa(int(s.Partitions))})
		case have > s.Partitions:
			p.Changes = append(p.Changes, Change{Topic: s.Name, Action: ActionManual,
				Reason: fmt.Sprintf("has %d partitions, file wants %d: Kafka cannot remove partitions", have, s.Partitions)})
		}
		if rf := d.replicas; s.ReplicationFactor > 0 && rf != int(s.ReplicationFactor) {
			p.Changes = append(p.Changes, Change{Topic: s.Name, Action: ActionManual,
				Reason: fmt.Sprintf("replication factor %d, file wants %d: change it with a partition reassignment (kafka-reassign-partitions.sh)", rf, s.ReplicationFactor)})
		}
		keys := make([]string, 0, len(s.Configs))
		for k := range s.Configs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if cur, ok := configs[s.Name][k]; !ok || cur != s.Configs[k] {
				p.Changes = append(p.Changes, Change{Topic: s.Name, Action: ActionSetConfig, Key: k, From: cur, To: s.Configs[k]})
			}
		}
		if len(p.Changes) == before {
			p.UpToDate++
		}
	}
	return p, nil
}

// topicDetail is what the plan needs of an existing topic.
type topicDetail struct {
	partitions int32
	replicas   int // of partition 0
}

// topicDetails asks a broker for the topics' metadata, bypassing the client's
// metadata cache. Topics that do not exist are absent from the map.
func topicDetails(ctx context.Context, cl *kgo.Client, names []string) (map[string]topicDetail, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, n := range names {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(n)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("topicspec: metadata: %w", err)
	}
	out := map[string]topicDetail{}
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				continue
			}
			return nil, fmt.Errorf("topicspec: metadata of %s: %w", *t.Topic, err)
		}
		d := topicDetail{partitions: int32(len(t.Partitions))}
		for _, p := range t.Partitions {
			if p.Partition == 0 {
				d.replicas = len(p.Replicas)
			}
		}
		out[*t.Topic] = d
	}
	return out, nil
}

// Apply makes the plan's changes: creates topics, raises partition counts and
// sets configs. Manual changes are skipped. It stops at the first error, which
// names the topic; rerunning after a fix is safe because a new plan contains
// only what is still different.
func Apply(ctx context.Context, cl *kgo.Client, p Plan) error {
	adm := kadm.NewClient(cl)
	alters := map[string][]kadm.AlterConfig{}
	var order []string
	served := map[string]int{} // topics created or grown -> partitions they must show
	for _, c := range p.Changes {
		switch c.Action {
		case ActionCreate:
			cfg := make(map[string]*string, len(c.Spec.Configs))
			for k, v := range c.Spec.Configs {
				cfg[k] = kadm.StringPtr(v)
			}
			resp, err := adm.CreateTopic(ctx, c.Spec.Partitions, c.Spec.ReplicationFactor, cfg, c.Topic)
			if err != nil && resp.ErrMessage != "" {
				err = fmt.Errorf("%w: %s", err, resp.ErrMessage)
			}
			if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
				return fmt.Errorf("topicspec: create %s: %w", c.Topic, err)
			}
			served[c.Topic] = max(1, int(c.Spec.Partitions))
		case ActionAddPartitions:
			n, err := strconv.Atoi(c.To)
			if err != nil {
				return fmt.Errorf("topicspec: partitions of %s: %w", c.Topic, err)
			}
			rs, err := adm.UpdatePartitions(ctx, n, c.Topic)
			if err == nil {
				if r, ok := rs[c.Topic]; ok && r.Err != nil {
					err = fmt.Errorf("%w %s", r.Err, r.ErrMessage)
				}
			}
			if err != nil {
				return fmt.Errorf("topicspec: add partitions to %s: %w", c.Topic, err)
			}
			served[c.Topic] = n
		case ActionSetConfig:
			if _, ok := alters[c.Topic]; !ok {
				order = append(order, c.Topic)
			}
			alters[c.Topic] = append(alters[c.Topic], kadm.AlterConfig{Op: kadm.SetConfig, Name: c.Key, Value: kadm.StringPtr(c.To)})
		}
	}
	for _, topic := range order {
		rs, err := adm.AlterTopicConfigs(ctx, alters[topic], topic)
		if err == nil {
			for _, r := range rs {
				if r.Err != nil {
					err = fmt.Errorf("%w %s", r.Err, r.ErrMessage)
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("topicspec: set configs of %s: %w", topic, err)
		}
	}
	return waitServed(ctx, adm, served)
}

// waitServed waits until the brokers' metadata shows every topic of want
// with at least its partitions. A real broker answers CreateTopics and
// CreatePartitions once the controller decided, and serves the change only
// when its metadata catches up: without the wait, a plan made right after
// Apply (a second `topics apply`, a stage starting) could see the old state.
func waitServed(ctx context.Context, adm *kadm.Client, want map[string]int) error {
	if len(want) == 0 {
		return nil
	}
	topics := make([]string, 0, len(want))
	for t := range want {
		topics = append(topics, t)
	}
	for {
		td, err := adm.ListTopics(ctx, topics...)
		missing := ""
		for _, t := range topics {
			if d, ok := td[t]; err == nil && (!ok || d.Err != nil || len(d.Partitions) < want[t]) {
				missing = t
				break
			}
		}
		if err == nil && missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%s not served with %d partitions yet", missing, want[missing])
			}
			return fmt.Errorf("topicspec: wait for the brokers to serve the applied topics: %w (%w)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
