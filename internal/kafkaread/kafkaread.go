// Package kafkaread reads whole topics the way a downstream consumer that
// reads only committed events sees them. The demo's audit and the test
// harness (kafkatest) both count exactly-once with it.
package kafkaread

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadCommitted reads every committed record of topics from the start until the
// end offsets seen when it was called (under read_committed, the last stable
// offset), and returns them in per-partition order. opts reach the cluster.
func ReadCommitted(ctx context.Context, opts []kgo.Opt, topics ...string) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return nil, fmt.Errorf("kafkaread: consumer: %w", err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("kafkaread: end offsets: %w", err)
	}
	want := map[string]map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			if want[o.Topic] == nil {
				want[o.Topic] = map[int32]int64{}
			}
			want[o.Topic][o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return nil, nil
	}
	var out []*kgo.Record
	seen := map[string]map[int32]int64{}
	done := func() bool {
		for t, ps := range want {
			for p, end := range ps {
				last, ok := seen[t][p]
				if !ok || last+1 < end {
					return false
				}
			}
		}
		return true
	}
	// Commit markers and aborted records sit between the last visible record and
	// the end offset, so "reached the end" cannot always be seen from records; a
	// quiet three seconds after the last record ends the read too.
	for !done() {
		pollCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		fs := cl.PollFetches(pollCtx)
		cancel()
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("kafkaread: read %v: %w", topics, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, e error) {
			if e != context.DeadlineExceeded {
				ferr = fmt.Errorf("kafkaread: fetch %s/%d: %w", t, p, e)
			}
		})
		if ferr != nil {
			return out, ferr
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			if seen[r.Topic] == nil {
				seen[r.Topic] = map[int32]int64{}
			}
			seen[r.Topic][r.Partition] = r.Offset
			n++
		})
		if n == 0 {
			break
		}
	}
	return out, nil
}
