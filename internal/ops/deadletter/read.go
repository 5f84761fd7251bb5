package deadletter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// quietPeriod ends a read when no record arrives for this long although the
// partition's end was not reached: what remains before the end are transaction
// markers or aborted records, which read_committed never returns.
const quietPeriod = time.Second

// Read calls fn, in offset order per partition, for every committed record of
// topic from its start up to the last stable offsets taken when Read began.
// opts reach the cluster (brokers, TLS, SASL). An error from fn stops the read
// and is returned. A topic that does not exist is ErrTopicNotFound; an empty
// one calls fn never and returns nil.
func Read(ctx context.Context, opts []kgo.Opt, topic string, fn func(*kgo.Record) error) error {
	return readFrom(ctx, opts, topic, nil, fn)
}

// readFrom reads like Read; with from set, only those partitions from those
// offsets.
func readFrom(ctx context.Context, opts []kgo.Opt, topic string, from map[int32]int64, fn func(*kgo.Record) error) error {
	admCl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("deadletter: kafka client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("deadletter: start offsets of %s: %w", topic, err)
	}
	if missing(starts, topic) {
		return &topicNotFoundError{topic}
	}
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("deadletter: end offsets of %s: %w", topic, err)
	}
	if missing(ends, topic) {
		return &topicNotFoundError{topic}
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("deadletter: end offsets of %s: %w", topic, err)
	}
	parts := map[int32]kgo.Offset{}
	end := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		start := int64(0)
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok && s.Err == nil {
			start = s.Offset
		}
		if from != nil {
			f, ok := from[o.Partition]
			if !ok {
				return
			}
			start = max(start, f)
		}
		if o.Offset > start {
			parts[o.Partition] = kgo.NewOffset().At(start)
			end[o.Partition] = o.Offset
		}
	})
	if len(parts) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return fmt.Errorf("deadletter: consumer: %w", err)
	}
	defer cl.Close()
	for len(end) > 0 {
		pctx, cancel := context.WithTimeout(ctx, quietPeriod)
		fs := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("deadletter: read %s: %w", topic, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = fmt.Errorf("deadletter: fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		n := 0
		var cbErr error
		fs.EachRecord(func(r *kgo.Record) {
			e, ok := end[r.Partition]
			if !ok || r.Offset >= e || cbErr != nil {
				return
			}
			n++
			if cbErr = fn(r); cbErr != nil {
				return
			}
			if r.Offset >= e-1 {
				delete(end, r.Partition)
			}
		})
		if cbErr != nil {
			return cbErr
		}
		if n == 0 {
			break
		}
	}
	return nil
}

// missing reports whether listed says that topic does not exist: kadm puts
// the metadata's topic error at partition -1. A partition's own
// UNKNOWN_TOPIC_OR_PARTITION (a leader not yet known, right after creation)
// is not that.
func missing(listed kadm.ListedOffsets, topic string) bool {
	o, ok := listed.Lookup(topic, -1)
	return ok && errors.Is(o.Err, kerr.UnknownTopicOrPartition)
}

// checkTopic returns ErrTopicNotFound if topic does not exist.
func checkTopic(ctx context.Context, opts []kgo.Opt, topic string) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("deadletter: kafka client: %w", err)
	}
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("deadletter: metadata of %s: %w", topic, err)
	}
	if d, ok := td[topic]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return &topicNotFoundError{topic}
	}
	return nil
}

// List calls fn for every dead letter of topic that f selects.
func List(ctx context.Context, opts []kgo.Opt, topic string, f Filter, fn func(Letter) error) error {
	return Read(ctx, opts, topic, func(r *kgo.Record) error {
		if l := Decode(r); f.Match(l) {
			return fn(l)
		}
		return nil
	})
}

// errFound stops Get's read once the record is found.
var errFound = errors.New("found")

// Get returns the committed record at pos in topic, ErrNotFound if there is
// none, or ErrTopicNotFound.
func Get(ctx context.Context, opts []kgo.Opt, topic string, pos Position) (Letter, error) {
	var got *kgo.Record
	err := readFrom(ctx, opts, topic, map[int32]int64{pos.Partition: pos.Offset}, func(r *kgo.Record) error {
		if r.Offset == pos.Offset {
			got = r
		}
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return Letter{}, err
	}
	if got == nil {
		return Letter{}, fmt.Errorf("%w at %s/%s", ErrNotFound, topic, pos)
	}
	return Decode(got), nil
}
