package topicspec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Errors of a refused plan. Plan.Err and Apply return ErrRefused together
// with the sentinel of every blocking problem, so errors.Is tells them apart.
var (
	// ErrRefused is returned by Plan.Err and Apply when the plan has a
	// blocking problem: Apply changed nothing. The message lists the problems.
	ErrRefused = errors.New("topicspec: plan refused, nothing changed")
	// ErrNotEnoughBrokers is a problem of a topic to create, or to grow, whose
	// replication factor is above the cluster's live broker count.
	ErrNotEnoughBrokers = errors.New("not enough live brokers")
	// ErrMinInsyncReplicas is a problem of a topic whose min.insync.replicas
	// the plan would set above the replication factor the topic has or will
	// have: every acks=all write to it would fail.
	ErrMinInsyncReplicas = errors.New("min.insync.replicas above the replication factor")
	// ErrRepartition is the problem (without AllowRepartition) or the warning
	// (with it) of raising the partition count of a keyed topic that holds
	// records (see the package doc).
	ErrRepartition = errors.New("more partitions for a keyed topic")
	// ErrRejected is a problem of a change the brokers reject when asked to
	// validate it (validate_only): an invalid config value, a policy, an
	// authorization failure.
	ErrRejected = errors.New("rejected by the brokers")
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
	// Spec is the whole desired topic.
	Spec Spec
	// Reason explains an ActionManual change; on ActionAddPartitions it notes
	// why the raise is harmless, if it is.
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
		if c.Reason != "" {
			return fmt.Sprintf("~ %s: partitions %s -> %s (%s)", c.Topic, c.From, c.To, c.Reason)
		}
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

// Problem is something MakePlan found wrong or risky in a plan.
type Problem struct {
	// Topic is the topic the problem is about.
	Topic string
	// Err says what is wrong and why. It matches one of ErrNotEnoughBrokers,
	// ErrMinInsyncReplicas, ErrRepartition and ErrRejected.
	Err error
	// Warning marks a problem Apply goes ahead with (a repartition that
	// AllowRepartition allowed). Any other problem makes Apply refuse the
	// whole plan.
	Warning bool
}

// String renders the problem as one line: "refused: topic: why" or
// "warning: topic: why".
func (p Problem) String() string {
	if p.Warning {
		return "warning: " + p.Topic + ": " + p.Err.Error()
	}
	return "refused: " + p.Topic + ": " + p.Err.Error()
}

// Plan is the set of changes that brings the cluster to the file.
type Plan struct {
	// Changes in file order, per topic: create, partitions, configs, manual.
	Changes []Change
	// UpToDate counts the topics that need nothing.
	UpToDate int
	// Problems found by MakePlan, in file order: Apply refuses a plan with any
	// problem that is not a warning.
	Problems []Problem
	// Brokers is the number of live brokers the plan was checked against.
	Brokers int
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

// Err returns nil when Apply may apply the plan, else an error that matches
// ErrRefused and the sentinel of each blocking problem, naming them all.
func (p Plan) Err() error {
	var blocking []Problem
	for _, pr := range p.Problems {
		if !pr.Warning {
			blocking = append(blocking, pr)
		}
	}
	if len(blocking) == 0 {
		return nil
	}
	return &refusedError{problems: blocking}
}

// refusedError is Plan.Err's error.
type refusedError struct{ problems []Problem }

func (e *refusedError) Error() string {
	parts := make([]string, len(e.problems))
	for i, p := range e.problems {
		parts[i] = p.Topic + ": " + p.Err.Error()
	}
	return ErrRefused.Error() + ": " + strings.Join(parts, "; ")
}

func (e *refusedError) Unwrap() []error {
	errs := []error{ErrRefused}
	for _, p := range e.problems {
		errs = append(errs, p.Err)
	}
	return errs
}

// Write prints the plan as a diff, one change a line, then one line per
// problem ("refused: ..." or "warning: ..."), and a summary line.
func (p Plan) Write(w io.Writer) error {
	for _, c := range p.Changes {
		if _, err := fmt.Fprintln(w, c.String()); err != nil {
			return fmt.Errorf("topicspec: write plan: %w", err)
		}
	}
	refused := 0
	for _, pr := range p.Problems {
		if !pr.Warning {
			refused++
		}
		if _, err := fmt.Fprintln(w, pr.String()); err != nil {
			return fmt.Errorf("topicspec: write plan: %w", err)
		}
	}
	summary := fmt.Sprintf("%d change(s), %d topic(s) up to date", p.Pending(), p.UpToDate)
	if refused > 0 {
		summary += fmt.Sprintf("; refused (%d problem(s)): nothing will be changed", refused)
	}
	if _, err := fmt.Fprintln(w, summary); err != nil {
		return fmt.Errorf("topicspec: write plan: %w", err)
	}
	return nil
}

// PlanOpt changes what MakePlan plans or allows.
type PlanOpt func(*planConfig)

type planConfig struct {
	allowRepartition bool
	rf               int
}

// AllowRepartition, when allow is true, lets the plan raise the partition
// count of keyed topics that hold records: each such raise is a warning in
// the plan instead of a refusal. Without it, such a plan is refused
// (ErrRepartition).
func AllowRepartition(allow bool) PlanOpt {
	return func(c *planConfig) { c.allowRepartition = allow }
}

// ReplicationFactor, when rf is not 0, replaces every spec's replication
// factor with rf (1 or more, or -1 for the broker default), and lowers a
// min.insync.replicas above rf to rf: the `--replication-factor 1` of a
// single-broker dev cluster. 0 keeps the specs' own.
func ReplicationFactor(rf int) PlanOpt {
	return func(c *planConfig) { c.rf = rf }
}

// MakePlan compares the desired topics with the cluster that cl talks to,
// and checks the changes before anything is changed (see the package doc):
// what it finds is in Plan.Problems, and Plan.Err says whether Apply may go
// ahead. Only the configs the specs name are compared; other configs are
// left alone. It reads metadata uncached (kadm caches it for seconds), so a
// plan made right after Apply sees Apply's work. An error means it could not
// plan (the cluster did not answer, or an option is invalid: ErrInvalid).
func MakePlan(ctx context.Context, cl *kgo.Client, specs []Spec, opts ...PlanOpt) (Plan, error) {
	var cfg planConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.rf != 0 {
		var err error
		if specs, err = overrideRF(specs, cfg.rf); err != nil {
			return Plan{}, err
		}
	}
	adm := kadm.NewClient(cl)
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	details, brokers, err := topicDetails(ctx, cl, names)
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

	p := Plan{Brokers: brokers}
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
			p.Changes = append(p.Changes, Change{Topic: s.Name, Action: ActionAddPartitions, Spec: s,
				From: strconv.Itoa(int(have)), To: strconv.Itoa(int(s.Partitions))})
		case have > s.Partitions:
			p.Changes = append(p.Changes, Change{Topic: s.Name, Action: ActionManual, Spec: s,
				Reason: fmt.Sprintf("has %d partitions, file wants %d: Kafka cannot remove partitions", have, s.Partitions)})
		}
		if rf := d.replicas; s.ReplicationFactor > 0 && rf != int(s.ReplicationFactor) {
			p.Changes = append(p.Changes, Change{Topic: s.Name, Action: ActionManual, Spec: s,
				Reason: fmt.Sprintf("replication factor %d, file wants %d: change it with a partition reassignment (kafka-reassign-partitions.sh)", rf, s.ReplicationFactor)})
		}
		keys := make([]string, 0, len(s.Configs))
		for k := range s.Configs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if cur, ok := configs[s.Name][k]; !ok || cur != s.Configs[k] {
				p.Changes = append(p.Changes, Change{Topic: s.Name, Action: ActionSetConfig, Spec: s, Key: k, From: cur, To: s.Configs[k]})
			}
		}
		if len(p.Changes) == before {
			p.UpToDate++
		}
	}
	if err := check(ctx, adm, &p, details, cfg); err != nil {
		return Plan{}, err
	}
	return p, nil
}

// overrideRF returns a copy of specs with ReplicationFactor(rf) applied.
func overrideRF(specs []Spec, rf int) ([]Spec, error) {
	if rf < BrokerDefault || rf > 32767 {
		return nil, fmt.Errorf("topicspec: %w: replication factor %d: want 1 or more, or -1 for the broker default", ErrInvalid, rf)
	}
	out := make([]Spec, len(specs))
	for i, s := range specs {
		s.ReplicationFactor = int16(rf)
		cfg := make(map[string]string, len(s.Configs))
		for k, v := range s.Configs {
			cfg[k] = v
		}
		// min.insync.replicas above the replica count would reject every
		// acks=all write (and transactional producers use acks=all).
		if m, err := strconv.Atoi(cfg["min.insync.replicas"]); err == nil && rf > 0 && m > rf {
			cfg["min.insync.replicas"] = strconv.Itoa(rf)
		}
		s.Configs = cfg
		out[i] = s
	}
	return out, nil
}

// check finds the plan's problems before anything changes: replication
// factors against the live brokers, min.insync.replicas against replication
// factors, repartitions of keyed topics, and what the brokers themselves
// reject when asked to validate each change.
func check(ctx context.Context, adm *kadm.Client, p *Plan, details map[string]topicDetail, cfg planConfig) error {
	add := func(topic string, warning bool, format string, args ...any) {
		p.Problems = append(p.Problems, Problem{Topic: topic, Err: fmt.Errorf(format, args...), Warning: warning})
	}
	// Keyed topics to grow: do they hold records?
	var grow []string
	for _, c := range p.Changes {
		if c.Action == ActionAddPartitions && !c.Spec.Unkeyed {
			grow = append(grow, c.Topic)
		}
	}
	written := map[string]bool{}
	if len(grow) > 0 {
		ends, err := adm.ListEndOffsets(ctx, grow...)
		if err != nil {
			return fmt.Errorf("topicspec: end offsets: %w", err)
		}
		for _, t := range grow {
			ps, ok := ends[t]
			if !ok || len(ps) == 0 {
				written[t] = true // unknown: assume it holds records
			}
			for _, o := range ps {
				if o.Err != nil || o.Offset > 0 {
					written[t] = true
				}
			}
		}
	}

	alters := map[string][]kadm.AlterConfig{}
	var alterOrder []string
	for i := range p.Changes {
		c := &p.Changes[i]
		s := c.Spec
		switch c.Action {
		case ActionCreate:
			rf := int(s.ReplicationFactor)
			if p.Brokers > 0 && rf > p.Brokers {
				add(c.Topic, false, "create with replication factor %d: %w (the cluster has %d, it needs %d); lower replication_factor in the file, or pass --replication-factor %d",
					rf, ErrNotEnoughBrokers, p.Brokers, rf, p.Brokers)
				continue
			}
			cfgs := make(map[string]*string, len(s.Configs))
			for k, v := range s.Configs {
				cfgs[k] = kadm.StringPtr(v)
			}
			rs, err := adm.ValidateCreateTopics(ctx, s.Partitions, s.ReplicationFactor, cfgs, c.Topic)
			if err != nil {
				return fmt.Errorf("topicspec: validate create %s: %w", c.Topic, err)
			}
			r, ok := rs[c.Topic]
			switch {
			case !ok:
				return fmt.Errorf("topicspec: validate create %s: no answer for the topic", c.Topic)
			case errors.Is(r.Err, kerr.TopicAlreadyExists):
			case r.Err != nil:
				add(c.Topic, false, "create: %w: %v%s", ErrRejected, r.Err, detail(r.ErrMessage))
				continue
			}
			if rf <= 0 {
				rf = int(r.ReplicationFactor) // what the broker default gives, if it says
			}
			if m, ok, _ := minInsync(s); ok && rf > 0 && m > rf {
				add(c.Topic, false, "create with min.insync.replicas %d and replication factor %d: %w: %s; lower min.insync.replicas in the file (--replication-factor %d lowers it too)",
					m, rf, ErrMinInsyncReplicas, misrConsequence, rf)
			}
		case ActionAddPartitions:
			rf := details[c.Topic].maxReplicas
			if p.Brokers > 0 && rf > p.Brokers {
				add(c.Topic, false, "partitions %s -> %s with the topic's replication factor %d: %w (the cluster has %d, it needs %d)",
					c.From, c.To, rf, ErrNotEnoughBrokers, p.Brokers, rf)
				continue
			}
			if !s.Unkeyed {
				if !written[c.Topic] {
					c.Reason = "the topic never held a record: no existing key moves"
				} else {
					msg := fmt.Sprintf("partitions %s -> %s: %%w: records with an existing key will go to a different partition, so consumers lose per-key order across the change", c.From, c.To)
					if compacted(s.Kind) {
						msg += ", and compaction keeps the old record of each moved key in its old partition"
					}
					msg += "; to do it safely, stop the producers and let the consumers drain first, or create a new topic"
					if !cfg.allowRepartition {
						msg += "; --allow-repartition raises it anyway (or say keyed: false in the file if no consumer needs per-key order)"
					}
					add(c.Topic, cfg.allowRepartition, msg, ErrRepartition)
				}
			}
			n, err := strconv.Atoi(c.To)
			if err != nil {
				return fmt.Errorf("topicspec: partitions of %s: %w", c.Topic, err)
			}
			rs, err := adm.ValidateUpdatePartitions(ctx, n, c.Topic)
			if err != nil {
				return fmt.Errorf("topicspec: validate partitions of %s: %w", c.Topic, err)
			}
			if r, ok := rs[c.Topic]; ok && r.Err != nil {
				add(c.Topic, false, "partitions %s -> %s: %w: %v%s", c.From, c.To, ErrRejected, r.Err, detail(r.ErrMessage))
			}
		case ActionSetConfig:
			if c.Key == "min.insync.replicas" {
				m, err := strconv.Atoi(strings.TrimSpace(c.To))
				if rf := details[c.Topic].replicas; err == nil && rf > 0 && m > rf {
					add(c.Topic, false, "min.insync.replicas %s -> %s: %w (the topic has %d replica(s)): %s; raise the replication factor first (a partition reassignment), or lower min.insync.replicas in the file (--replication-factor %d lowers it too)",
						orDefault(c.From), c.To, ErrMinInsyncReplicas, rf, misrConsequence, rf)
					continue
				}
			}
			if _, ok := alters[c.Topic]; !ok {
				alterOrder = append(alterOrder, c.Topic)
			}
			alters[c.Topic] = append(alters[c.Topic], kadm.AlterConfig{Op: kadm.SetConfig, Name: c.Key, Value: kadm.StringPtr(c.To)})
		}
	}
	for _, topic := range alterOrder {
		rs, err := adm.ValidateAlterTopicConfigs(ctx, alters[topic], topic)
		if err != nil {
			return fmt.Errorf("topicspec: validate configs of %s: %w", topic, err)
		}
		for _, r := range rs {
			if r.Err != nil {
				add(topic, false, "set configs: %w: %v%s", ErrRejected, r.Err, detail(r.ErrMessage))
			}
		}
	}
	// Problems in file order, as the changes are.
	order := map[string]int{}
	for i, c := range p.Changes {
		if _, ok := order[c.Topic]; !ok {
			order[c.Topic] = i
		}
	}
	sort.SliceStable(p.Problems, func(i, j int) bool { return order[p.Problems[i].Topic] < order[p.Problems[j].Topic] })
	return nil
}

// detail renders a broker's error message, if it sent one.
func detail(msg string) string {
	if msg == "" {
		return ""
	}
	return " (" + msg + ")"
}

func orDefault(v string) string {
	if v == "" {
		return "(default)"
	}
	return v
}

// topicDetail is what the plan needs of an existing topic.
type topicDetail struct {
	partitions  int32
	replicas    int // the fewest replicas of any partition
	maxReplicas int // the most replicas of any partition
}

// topicDetails asks a broker for the topics' metadata, bypassing the client's
// metadata cache, and returns it with the number of live brokers. Topics that
// do not exist are absent from the map.
func topicDetails(ctx context.Context, cl *kgo.Client, names []string) (map[string]topicDetail, int, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, n := range names {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(n)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, 0, fmt.Errorf("topicspec: metadata: %w", err)
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
			return nil, 0, fmt.Errorf("topicspec: metadata of %s: %w", *t.Topic, err)
		}
		d := topicDetail{partitions: int32(len(t.Partitions))}
		for i, p := range t.Partitions {
			n := len(p.Replicas)
			if i == 0 || n < d.replicas {
				d.replicas = n
			}
			d.maxReplicas = max(d.maxReplicas, n)
		}
		out[*t.Topic] = d
	}
	return out, len(resp.Brokers), nil
}

// Apply makes the plan's changes: creates topics, sets configs, then raises
// partition counts (the one change that cannot be undone, last). Manual
// changes are skipped. A plan with a blocking problem (Plan.Err) is refused
// whole: Apply returns that error and changes nothing. Otherwise it stops at
// the first error, which names the topic and how many changes were made
// before it; rerunning after a fix is safe because a new plan contains only
// what is still different.
func Apply(ctx context.Context, cl *kgo.Client, p Plan) error {
	if err := p.Err(); err != nil {
		return err
	}
	adm := kadm.NewClient(cl)
	alters := map[string][]kadm.AlterConfig{}
	var order []string
	served := map[string]int{} // topics created or grown -> partitions they must show
	done, total := 0, p.Pending()
	failed := func(what string, err error) error {
		return fmt.Errorf("topicspec: %s: %w (%d of %d change(s) applied before it; fix the cause and rerun: a new plan holds only what is left)", what, err, done, total)
	}
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
				return failed("create "+c.Topic, err)
			}
			served[c.Topic] = max(1, int(c.Spec.Partitions))
			done++
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
			return failed("set configs of "+topic, err)
		}
		done += len(alters[topic])
	}
	for _, c := range p.Changes {
		if c.Action != ActionAddPartitions {
			continue
		}
		n, err := strconv.Atoi(c.To)
		if err != nil {
			return failed("partitions of "+c.Topic, err)
		}
		rs, err := adm.UpdatePartitions(ctx, n, c.Topic)
		if err == nil {
			if r, ok := rs[c.Topic]; ok && r.Err != nil {
				err = fmt.Errorf("%w %s", r.Err, r.ErrMessage)
			}
		}
		if err != nil {
			return failed("add partitions to "+c.Topic, err)
		}
		served[c.Topic] = n
		done++
	}
	return waitServed(ctx, cl, served)
}

// waitServed waits until the brokers' metadata shows every topic of want
// with at least its partitions. A real broker answers CreateTopics and
// CreatePartitions once the controller decided, and serves the change only
// when its metadata catches up: without the wait, a plan made right after
// Apply (a second `topics apply`, a stage starting) could see the old state.
// It asks uncached: kgo's cached metadata would show the old state for
// seconds (kgo.MetadataMinAge).
func waitServed(ctx context.Context, cl *kgo.Client, want map[string]int) error {
	if len(want) == 0 {
		return nil
	}
	topics := make([]string, 0, len(want))
	for t := range want {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for {
		td, _, err := topicDetails(ctx, cl, topics)
		missing := ""
		for _, t := range topics {
			if d, ok := td[t]; err == nil && (!ok || int(d.partitions) < want[t]) {
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
