package relaybench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
)

func topicEnd(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// consumeCountFrom counts records read_committed from the given offsets (the
// start when nil) until want arrived.
func consumeCountFrom(ctx context.Context, kopts []kgo.Opt, topic string, from map[int32]int64, want int, timeout time.Duration) (int, error) {
	opts := append(append([]kgo.Opt{}, kopts...), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if from == nil {
		opts = append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	} else {
		ps := map[int32]kgo.Offset{}
		for p, o := range from {
			ps[p] = kgo.NewOffset().At(o)
		}
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: ps}))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	n := 0
	for n < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return n, fmt.Errorf("saw %d of %d events: %w", n, want, ctx.Err())
		}
		n += fs.NumRecords()
	}
	return n, nil
}

// steadyLoad offers rate single-event transactions per second for d and
// measures, per event, the time from the writer's COMMIT returning to a
// read_committed consumer receiving it.
func steadyLoad(ctx context.Context, url string, kopts []kgo.Opt, topic string, rate int, d time.Duration, size int) ([]time.Duration, int, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, kopts...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(50*time.Millisecond))...)
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	// The consumer may see an event before its writer has noted the commit
	// time, so both sides record times and they are joined at the end.
	var committed, seen sync.Map // event id -> time.Time
	var seenN atomic.Int64
	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				for _, h := range r.Headers {
					if h.Key == envelope.HeaderEventID {
						seen.Store(string(h.Value), now)
						seenN.Add(1)
					}
				}
			})
		}
	}()
	time.Sleep(2 * time.Second) // relay start-up and consumer positioning

	const writers = 4
	payload := []byte(`{"pad":"` + strings.Repeat("x", max(size-10, 0)) + `"}`)
	var sent atomic.Int64
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	total := int(d / interval)
	var wg sync.WaitGroup
	var werr atomic.Value
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				werr.Store(err)
				return
			}
			defer conn.Close(context.Background())
			for i := w; i < total; i += writers {
				if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
					time.Sleep(wait)
				}
				id := uuid.Must(uuid.NewV7())
				if _, err := conn.Exec(ctx, `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES ($1, 'Order', $2, 'order.changed', $3)`,
					id, fmt.Sprintf("s-%d", i%1000), payload); err != nil {
					werr.Store(err)
					return
				}
				committed.Store(id.String(), time.Now())
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := werr.Load().(error); ok && err != nil {
		stopConsumer()
		<-consumerDone
		return nil, 0, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && seenN.Load() < sent.Load() {
		time.Sleep(50 * time.Millisecond)
	}
	stopConsumer()
	<-consumerDone
	var lat []time.Duration
	committed.Range(func(k, v any) bool {
		if at, ok := seen.Load(k); ok {
			lat = append(lat, at.(time.Time).Sub(v.(time.Time)))
		}
		return true
	})
	if len(lat) == 0 {
		return nil, 0, errors.New("no event reached the consumer")
	}
	return lat, int(sent.Load()), nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i].Round(10 * time.Microsecond)
}
