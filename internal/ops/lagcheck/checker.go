package lagcheck

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures a Checker.
type Config struct {
	// Groups to check. Defaults to every group on the cluster.
	Groups []string
	// Window is how many samples per partition Evaluate judges. Defaults to 10
	// (Burrow's default).
	Window int
	// ProbeTimeout bounds the read_committed fetch that finds the oldest
	// unconsumed record of each lagging partition; a partition with nothing
	// visible by then is caught up (its gap is markers or aborted records).
	// Defaults to 2s.
	ProbeTimeout time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// PartitionReport is one partition of a group in a Report.
type PartitionReport struct {
	// Topic and Partition name the partition.
	Topic     string
	Partition int32
	// Sample is the partition's latest sample.
	Sample
	// HighWatermark is the partition's end including uncommitted transactional
	// records, for reference: lag is measured against Sample.End.
	HighWatermark int64
	// Status is Evaluate's verdict over the window.
	Status Status
}

// GroupReport is one group in a Report.
type GroupReport struct {
	// Group is the consumer group's name.
	Group string
	// State is the coordinator's group state (Stable, Empty, Dead, ...).
	State string
	// Members is the number of live members.
	Members int
	// Status is OK, WARN or ERR (see GroupStatus).
	Status Status
	// Worst is the worst partition status, naming the cause of an ERR.
	Worst Status
	// Lag is the sum of the partitions' lag in records.
	Lag int64
	// MaxLagSeconds is the age of the oldest unconsumed record of the group.
	MaxLagSeconds float64
	// Partitions sorted by topic and partition.
	Partitions []PartitionReport
}

// Report is the result of one Sample.
type Report struct {
	// At is when the sample was taken.
	At time.Time
	// Groups sorted by name: the groups the cluster knows (with members or
	// committed offsets). Empty when there are none: no stage has joined or
	// committed an offset yet, or Config.Groups names no existing group.
	Groups []GroupReport
	// Missing are the names of Config.Groups the cluster does not know (no
	// member, no committed offset), sorted: a wrong name, or a stage that
	// has not committed yet. They are not in Groups.
	Missing []string
}

// Checker samples consumer lag and keeps a window of samples per partition.
// It is not safe for concurrent use; one goroutine samples in a loop.
type Checker struct {
	cfg     Config
	opts    []kgo.Opt
	cl      *kgo.Client
	adm     *kadm.Client
	windows map[partKey][]Sample
}

type partKey struct {
	group, topic string
	partition    int32
}

// New validates cfg and connects with opts (seed brokers, TLS, SASL).
func New(cfg Config, opts ...kgo.Opt) (*Checker, error) {
	if cfg.Window <= 0 {
		cfg.Window = 10
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("lagcheck: kafka client: %w", err)
	}
	return &Checker{cfg: cfg, opts: opts, cl: cl, adm: kadm.NewClient(cl), windows: map[partKey][]Sample{}}, nil
}

// Close releases the Kafka client.
func (c *Checker) Close() { c.cl.Close() }

// Sample takes one sample of every group, adds it to the window and evaluates.
func (c *Checker) Sample(ctx context.Context) (Report, error) {
	groups := c.cfg.Groups
	if len(groups) == 0 {
		listed, err := retryCoordinator(ctx, func() (kadm.ListedGroups, error) { return c.adm.ListGroups(ctx) })
		if err != nil {
			return Report{}, fmt.Errorf("lagcheck: list groups: %w", err)
		}
		groups = listed.Groups()
	}
	groups = append([]string(nil), groups...)
	sort.Strings(groups)
	groups = slices.Compact(groups)
	if len(groups) == 0 {
		c.windows = map[partKey][]Sample{}
		return Report{At: c.cfg.Now()}, nil
	}
	described, err := retryCoordinator(ctx, func() (kadm.DescribedGroups, error) { return c.adm.DescribeGroups(ctx, groups...) })
	if err != nil {
		return Report{}, fmt.Errorf("lagcheck: describe groups: %w", err)
	}

	committed := map[string]kadm.OffsetResponses{}
	topicSet := map[string]bool{}
	var missing []string
	var known []string
	for _, g := range groups {
		offs, err := retryCoordinator(ctx, func() (kadm.OffsetResponses, error) { return c.adm.FetchOffsets(ctx, g) })
		if errors.Is(err, kerr.GroupIDNotFound) {
			offs, err = kadm.OffsetResponses{}, nil
		}
		if err != nil {
			return Report{}, fmt.Errorf("lagcheck: offsets of group %s: %w", g, err)
		}
		if err := offs.Error(); err != nil {
			return Report{}, fmt.Errorf("lagcheck: offsets of group %s: %w", g, err)
		}
		if len(offs) == 0 && !live(described[g]) {
			if len(c.cfg.Groups) > 0 {
				missing = append(missing, g) // a listed group that vanished is just gone
			}
			continue
		}
		known = append(known, g)
		committed[g] = offs
		for t := range offs {
			topicSet[t] = true
		}
	}
	groups = known
	topics := make([]string, 0, len(topicSet))
	for t := range topicSet {
		topics = append(topics, t)
	}
	var lso, hwm kadm.ListedOffsets
	if len(topics) > 0 {
		if lso, err = c.adm.ListCommittedOffsets(ctx, topics...); err != nil {
			return Report{}, fmt.Errorf("lagcheck: last stable offsets: %w", err)
		}
		if hwm, err = c.adm.ListEndOffsets(ctx, topics...); err != nil {
			return Report{}, fmt.Errorf("lagcheck: high watermarks: %w", err)
		}
	}
	now := c.cfg.Now()

	// Find the oldest visible unconsumed record of every lagging partition.
	want := map[probeKey]bool{}
	for _, offs := range committed {
		offs.Each(func(o kadm.OffsetResponse) {
			if end, ok := lso.Lookup(o.Topic, o.Partition); ok && end.Err == nil && o.At >= 0 && end.Offset > o.At {
				want[probeKey{o.Topic, o.Partition, o.At}] = true
			}
		})
	}
	found, err := c.probe(ctx, want)
	if err != nil {
		return Report{}, err
	}

	rep := Report{At: now, Missing: missing}
	seen := map[partKey]bool{}
	for _, g := range groups {
		gr := GroupReport{Group: g}
		if d, ok := described[g]; ok {
			gr.State, gr.Members = d.State, len(d.Members)
		}
		var statuses []Status
		committed[g].Each(func(o kadm.OffsetResponse) {
			end, ok := lso.Lookup(o.Topic, o.Partition)
			if !ok || end.Err != nil || o.At < 0 {
				return
			}
			s := Sample{At: now, Committed: o.At, End: end.Offset}
			if r, ok := found[probeKey{o.Topic, o.Partition, o.At}]; ok && r.Offset < end.Offset {
				s.Lag = end.Offset - r.Offset
				s.LagSeconds = max(0, now.Sub(r.Timestamp).Seconds())
			}
			k := partKey{g, o.Topic, o.Partition}
			seen[k] = true
			w := append(c.windows[k], s)
			if len(w) > c.cfg.Window {
				w = w[len(w)-c.cfg.Window:]
			}
			c.windows[k] = w
			pr := PartitionReport{Topic: o.Topic, Partition: o.Partition, Sample: s, Status: Evaluate(w, gr.Members)}
			if h, ok := hwm.Lookup(o.Topic, o.Partition); ok {
				pr.HighWatermark = h.Offset
			}
			gr.Lag += s.Lag
			gr.MaxLagSeconds = max(gr.MaxLagSeconds, s.LagSeconds)
			if pr.Status > gr.Worst {
				gr.Worst = pr.Status
			}
			statuses = append(statuses, pr.Status)
			gr.Partitions = append(gr.Partitions, pr)
		})
		sort.Slice(gr.Partitions, func(i, j int) bool {
			a, b := gr.Partitions[i], gr.Partitions[j]
			return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
		})
		gr.Status = GroupStatus(statuses)
		rep.Groups = append(rep.Groups, gr)
	}
	for k := range c.windows {
		if !seen[k] {
			delete(c.windows, k) // group or partition gone: forget its window
		}
	}
	return rep, nil
}

// coordinatorWait bounds how long Sample waits for group coordinators that
// are not ready.
const coordinatorWait = 10 * time.Second

// retryCoordinator calls fn until it returns something other than a group
// coordinator that is not ready, for up to coordinatorWait. On a new
// cluster the first group request makes Kafka create __consumer_offsets, and
// its coordinators answer COORDINATOR_NOT_AVAILABLE or
// COORDINATOR_LOAD_IN_PROGRESS for a moment: exactly when `outbox lag` runs
// before any stage committed.
func retryCoordinator[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	deadline := time.Now().Add(coordinatorWait)
	delay := 50 * time.Millisecond
	for {
		v, err := fn()
		busy := errors.Is(err, kerr.CoordinatorNotAvailable) || errors.Is(err, kerr.CoordinatorLoadInProgress) || errors.Is(err, kerr.NotCoordinator)
		if !busy || time.Now().Add(delay).After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// live reports whether a described group exists with members or state:
// Kafka describes an unknown group as Dead (or, from 4.0, GROUP_ID_NOT_FOUND).
func live(d kadm.DescribedGroup) bool {
	return len(d.Members) > 0 || (d.Err == nil && d.State != "" && d.State != "Dead")
}

type probeKey struct {
	topic     string
	partition int32
	offset    int64
}

// probe reads, with read_committed isolation, the first visible record at or
// after each wanted offset. A partition with only transaction markers (and
// aborted records, which read_committed drops) up to its last stable offset
// has nothing visible: it is absent from the result, settled as soon as the
// markers are read (control records are kept for that, or every committed
// transaction's marker, the usual last record of a caught-up partition,
// would cost a wait of ProbeTimeout). So is one where nothing shows up
// within ProbeTimeout.
func (c *Checker) probe(ctx context.Context, want map[probeKey]bool) (map[probeKey]*kgo.Record, error) {
	found := map[probeKey]*kgo.Record{}
	if len(want) == 0 {
		return found, nil
	}
	// One probe client per distinct offset of a partition (two groups at two
	// offsets of one partition need two reads).
	rounds := []map[string]map[int32]kgo.Offset{{}}
	for k := range want {
		placed := false
		for _, r := range rounds {
			if _, taken := r[k.topic][k.partition]; !taken {
				if r[k.topic] == nil {
					r[k.topic] = map[int32]kgo.Offset{}
				}
				r[k.topic][k.partition] = kgo.NewOffset().At(k.offset)
				placed = true
				break
			}
		}
		if !placed {
			rounds = append(rounds, map[string]map[int32]kgo.Offset{k.topic: {k.partition: kgo.NewOffset().At(k.offset)}})
		}
	}
	for _, r := range rounds {
		if err := c.probeRound(ctx, r, found); err != nil {
			return nil, err
		}
	}
	return found, nil
}

func (c *Checker) probeRound(ctx context.Context, parts map[string]map[int32]kgo.Offset, found map[probeKey]*kgo.Record) error {
	wait := min(c.cfg.ProbeTimeout/2, 500*time.Millisecond)
	opts := append([]kgo.Opt{}, c.opts...)
	opts = append(opts,
		kgo.ConsumePartitions(parts),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(wait),
		kgo.FetchMaxPartitionBytes(64<<10),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("lagcheck: probe client: %w", err)
	}
	defer cl.Close()
	remaining := 0
	for _, ps := range parts {
		remaining += len(ps)
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
	defer cancel()
	settled := map[probeKey]bool{}
	for remaining > 0 {
		fs := cl.PollFetches(pctx)
		if pctx.Err() != nil {
			break
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("lagcheck: probe %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			start := parts[p.Topic][p.Partition].EpochOffset().Offset
			k := probeKey{p.Topic, p.Partition, start}
			if settled[k] {
				return
			}
			settle := func(r *kgo.Record) {
				if r != nil {
					found[k] = r
				}
				settled[k] = true
				remaining--
				cl.PauseFetchPartitions(map[string][]int32{p.Topic: {p.Partition}})
			}
			for _, r := range p.Records {
				if !r.Attrs.IsControl() {
					settle(r)
					return
				}
				if r.Offset+1 >= p.LastStableOffset {
					settle(nil) // markers only, up to the last stable offset
					return
				}
			}
		})
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lagcheck: probe: %w", err)
	}
	return nil
}
