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
// end offsets (high watermarks) seen when it was called, and returns them in
// per-partition order. opts reach the cluster.
func ReadCommitted(ctx context.Context, opts []kgo.Opt, topics ...string) ([]*kgo.Record, error) {
	return read(ctx, opts, kgo.ReadCommitted(), topics)
}

// ReadUncommitted reads every data record of topics like ReadCommitted, and
// also the records of aborted and open transactions: what the log holds, for
// tests that count what read_committed hid.
func ReadUncommitted(ctx context.Context, opts []kgo.Opt, topics ...string) ([]*kgo.Record, error) {
	return read(ctx, opts, kgo.ReadUncommitted(), topics)
}

func read(ctx context.Context, opts []kgo.Opt, level kgo.IsolationLevel, topics []string) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(level),
		// Commit and abort markers come back too, so the end of a partition
		// whose last entries are markers or aborted records is seen exactly.
		kgo.KeepControlRecords())...)
	if err != nil {
		return nil, fmt.Errorf("kafkaread: consumer: %w", err)
	}
	defer cl.Close()
	// The high watermark, not the last stable offset: on a real broker EndTxn
	// returns once the coordinator decided, and the commit markers (which
	// move the LSO) are written after it, so right after a commit the LSO may
	// not cover it yet. The read waits for those records instead.
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
	// With the markers kept the end is seen exactly once every transaction
	// below it is decided; a quiet 10 s ends the read too, for a transaction
	// left open or a compacted partition whose last records were removed.
	for !done() {
		pollCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
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
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
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
