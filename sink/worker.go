package sink

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// worker owns one assigned partition: it handles its records in order and
// marks offsets once the ledger has recorded them.
type worker struct {
	s         *Sink
	ep        *endpoint
	topic     string
	partition int32

	mu     sync.Mutex
	queue  []*kgo.Record
	paused bool
	wake   chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// ordered mode: keys with an event retrying, and the events held behind it.
	held map[string]*heldKey
	// retry tier partitions: copies waiting for their due time, soonest first.
	// A tier holds copies of different delays, so the head is not always due first.
	tier       bool
	waiting    []*delivery
	next       int64 // offset after the last record taken from the queue
	epoch      int32
	lastMarked int64
}

type heldKey struct {
	recs []*delivery
	due  time.Time
}

func newWorker(s *Sink, ep *endpoint, topic string, partition int32) *worker {
	ctx, cancel := context.WithCancel(s.runCtx)
	return &worker{
		s: s, ep: ep, topic: topic, partition: partition,
		wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		held: map[string]*heldKey{}, next: -1, lastMarked: -1,
		tier: !isSourceTopic(ep, topic),
	}
}

func isSourceTopic(ep *endpoint, topic string) bool {
	for _, t := range ep.Topics {
		if t == topic {
			return true
		}
	}
	return false
}

// runTier is run for a retry tier partition: it takes copies off the queue
// as they come and calls each when due, in due order.
func (w *worker) runTier() {
	defer close(w.done)
	for {
		for len(w.waiting) < w.s.cfg.MaxBufferedRecords {
			rec, ok := w.pop()
			if !ok {
				break
			}
			w.next, w.epoch = rec.Offset+1, rec.LeaderEpoch
			d := newDelivery(rec)
			i := sort.Search(len(w.waiting), func(i int) bool { return w.waiting[i].due.After(d.due) })
			w.waiting = slices.Insert(w.waiting, i, d)
		}
		if len(w.waiting) > 0 && !w.waiting[0].due.After(time.Now()) {
			d := w.waiting[0]
			w.waiting = w.waiting[1:]
			if _, err := w.process(d); err != nil {
				return
			}
			w.mark()
			continue
		}
		w.mark()
		var tc <-chan time.Time
		var timer *time.Timer
		if len(w.waiting) > 0 {
			timer = time.NewTimer(time.Until(w.waiting[0].due))
			tc = timer.C
		}
		select {
		case <-w.ctx.Done():
		case <-w.wake:
		case <-tc:
		}
		if timer != nil {
			timer.Stop()
		}
		if w.ctx.Err() != nil {
			return
		}
	}
}

// push queues polled records, pausing the partition's fetches when the queue is full.
func (w *worker) push(recs []*kgo.Record) {
	w.mu.Lock()
	w.queue = append(w.queue, recs...)
	if len(w.queue) >= w.s.cfg.MaxBufferedRecords && !w.paused {
		w.paused = true
		w.s.client.PauseFetchPartitions(map[string][]int32{w.topic: {w.partition}})
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) pop() (*kgo.Record, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return nil, false
	}
	r := w.queue[0]
	w.queue[0] = nil
	w.queue = w.queue[1:]
	if w.paused && len(w.queue) <= w.s.cfg.MaxBufferedRecords/2 {
		w.paused = false
		w.s.client.ResumeFetchPartitions(map[string][]int32{w.topic: {w.partition}})
	}
	return r, true
}

// stop cancels the worker's waits and waits for it: a call under way is
// finished and recorded first.
func (w *worker) stop() {
	w.cancel()
	<-w.done
	w.mu.Lock()
	if w.paused {
		w.paused = false
		w.s.client.ResumeFetchPartitions(map[string][]int32{w.topic: {w.partition}})
	}
	w.mu.Unlock()
}

func (w *worker) run() {
	defer close(w.done)
	for {
		if err := w.runDue(); err != nil {
			return
		}
		rec, ok := w.pop()
		if !ok {
			var timer *time.Timer
			var tc <-chan time.Time
			if due, ok := w.nextDue(); ok {
				timer = time.NewTimer(time.Until(due))
				tc = timer.C
			}
			select {
			case <-w.ctx.Done():
			case <-w.wake:
			case <-tc:
			}
			if timer != nil {
				timer.Stop()
			}
			if w.ctx.Err() != nil {
				return
			}
			continue
		}
		d := newDelivery(rec)
		w.next, w.epoch = rec.Offset+1, rec.LeaderEpoch
		if w.ep.Mode == ModeOrdered && d.validID {
			if h, ok := w.held[string(rec.Key)]; ok {
				// A later event of a key that is retrying waits its turn.
				h.recs = append(h.recs, d)
				if err := w.s.ledger.markPending(w.ctx, w.ep.Endpoint, d); err != nil {
					w.s.logger.WarnContext(w.ctx, "sink: mark pending", slog.Any("error", err))
				}
				w.mark()
				continue
			}
		}
		due, err := w.process(d)
		if err != nil {
			return
		}
		if !due.IsZero() {
			w.held[string(rec.Key)] = &heldKey{recs: []*delivery{d}, due: due}
		}
		w.mark()
	}
}

// process handles d, retrying on errors of our own (Postgres or Kafka down)
// until it succeeds or the worker stops.
func (w *worker) process(d *delivery) (time.Time, error) {
	if !d.due.IsZero() {
		if err := sleepUntil(w.ctx, d.due); err != nil {
			return time.Time{}, err
		}
	}
	backoff := 100 * time.Millisecond
	for {
		if err := w.s.acquire(w.ctx); err != nil {
			return time.Time{}, err
		}
		due, err := w.s.handle(w.ctx, w.ep, d)
		w.s.release()
		if err == nil {
			return due, nil
		}
		if w.ctx.Err() != nil {
			return time.Time{}, err
		}
		w.s.logger.ErrorContext(w.ctx, "sink: handling failed; will try again", slog.String("topic", w.topic),
			slog.Int("partition", int(w.partition)), slog.Int64("offset", d.rec.Offset), slog.Any("error", err))
		if err := sleepFor(w.ctx, backoff); err != nil {
			return time.Time{}, err
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// runDue retries held keys whose time has come and releases the events
// behind them in order.
func (w *worker) runDue() error {
	if len(w.held) == 0 {
		return nil
	}
	now := time.Now()
	changed := false
	for key, h := range w.held {
		if h.due.After(now) {
			continue
		}
		for len(h.recs) > 0 {
			due, err := w.process(h.recs[0])
			if err != nil {
				return err
			}
			if !due.IsZero() {
				h.due = due
				break
			}
			h.recs[0] = nil
			h.recs = h.recs[1:]
			changed = true
		}
		if len(h.recs) == 0 {
			delete(w.held, key)
		}
	}
	if changed {
		w.mark()
	}
	return nil
}

func (w *worker) nextDue() (time.Time, bool) {
	var due time.Time
	for _, h := range w.held {
		if due.IsZero() || h.due.Before(due) {
			due = h.due
		}
	}
	return due, !due.IsZero()
}

// mark marks for commit the offset below which every record is done: the
// next offset, or the oldest held record in ordered mode.
func (w *worker) mark() {
	off := w.next
	for _, d := range w.waiting {
		off = min(off, d.rec.Offset)
	}
	for _, h := range w.held {
		if len(h.recs) > 0 && h.recs[0].rec.Offset < off {
			off = h.recs[0].rec.Offset
		}
	}
	if off <= w.lastMarked || off < 0 {
		return
	}
	w.lastMarked = off
	w.s.client.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{
		w.topic: {w.partition: {Epoch: w.epoch, Offset: off}},
	})
}
