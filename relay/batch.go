package relay

import (
	"context"
	"fmt"
	"golang.org/x/sync/semaphore"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"
)

// pump is the batching loop of one session: it produces the stream's records
// into a Kafka transaction, closes the transaction with a checkpoint record on
// count, bytes, linger or a split, and only then lets the stream confirm.
type pump struct {
	r     *Relay
	cl    *kgo.Client
	st    *stream
	items <-chan []item
	room  *semaphore.Weighted // the queue's room, given back per handled group

	start checkpoint // read from Kafka at session start: what to skip
	done  checkpoint // last committed
	next  checkpoint // to commit with the open batch

	pctx context.Context // produce context: outlives ctx by ShutdownTimeout
	// tctx bounds the open Kafka transaction's produces by TransactionTimeout
	// from its first record. Produce waits for buffer space, and a Kafka that
	// takes records but never acknowledges them (a half-open connection)
	// keeps the buffer full; the broker aborts a transaction that old
	// anyway, so waiting longer cannot help.
	tctx    context.Context
	tcancel context.CancelFunc

	debug       bool
	open, dirty bool
	firstAt     time.Time
	events      int
	bytes       int
	splitEvents int // rows of the current Postgres transaction in this Kafka transaction
	splitBytes  int
	txns        int
	commitTimes []time.Time
	inTx        bool
	// The adaptive wait's view of the arrival process: the mean gap between
	// the WAL commit times of recent relayed transactions (an EWMA: WAL
	// times, not arrival here, so a burst queued behind a commit does not
	// look like a fast stream), the last commit time, and when that
	// transaction reached the pump.
	gap        time.Duration
	lastCommit time.Time
	lastArrive time.Time
	waitTimer  *time.Timer
	tx         struct {
		lsn            pglogrepl.LSN
		commitTime     time.Time
		rows, skipRows int64
		skipAll        bool
		relayed        bool
	}
	prodErrMu   sync.Mutex
	prodErr     error
	promiseFunc func(*kgo.Record, error)
}

// loop runs until ctx ends (finishing the open batch) or an error.
func (p *pump) loop(ctx context.Context, errs <-chan error, stopStream func()) error {
	p.start = p.done
	p.debug = p.r.log.Enabled(ctx, slog.LevelDebug)
	pctx, cancelP := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelP()
	stopAfter := context.AfterFunc(ctx, func() { time.AfterFunc(p.r.cfg.ShutdownTimeout, cancelP) })
	defer stopAfter()
	p.pctx = pctx
	p.promiseFunc = func(_ *kgo.Record, err error) {
		if err != nil {
			p.prodErrMu.Lock()
			if p.prodErr == nil {
				p.prodErr = err
			}
			p.prodErrMu.Unlock()
		}
	}
	for {
		if ctx.Err() != nil {
			return p.shutdown(ctx, stopStream)
		}
		var group []item
		select {
		case group = <-p.items:
		default:
			// The stream has nothing queued: close the batch at a transaction
			// boundary unless more is expected within the latency budget.
			lingerC := (<-chan time.Time)(nil)
			if p.dirty && !p.inTx {
				wait := p.wait(time.Now())
				if wait <= 0 {
					if err := p.commit(pctx); err != nil {
						return err
					}
					continue
				}
				if p.waitTimer == nil {
					p.waitTimer = time.NewTimer(wait)
				} else {
					p.waitTimer.Reset(wait)
				}
				lingerC = p.waitTimer.C
			}
			var (
				got     bool
				wakeErr error
				stopNow bool
			)
			select {
			case group = <-p.items:
				got = true
			case err := <-errs:
				if err == nil {
					err = fmt.Errorf("relay: stream stopped")
				}
				wakeErr = err
			case <-ctx.Done():
				stopNow = true
			case <-lingerC:
			}
			if lingerC != nil {
				p.waitTimer.Stop()
			}
			switch {
			case wakeErr != nil:
				return wakeErr
			case stopNow:
				return p.shutdown(ctx, stopStream)
			case !got:
				continue
			}
		}
		for i := range group {
			if err := p.handle(&group[i]); err != nil {
				return err
			}
		}
		p.room.Release(int64(len(group)))
	}
}

// handle applies one stream item to the batch.
func (p *pump) handle(it *item) error {
	cfg := &p.r.cfg
	switch it.kind {
	case itemBegin:
		if p.open && (p.events >= cfg.MaxBatchEvents || p.bytes >= cfg.MaxBatchBytes) {
			if err := p.commit(p.pctx); err != nil {
				return err
			}
		}
		p.inTx = true
		p.tx.lsn, p.tx.commitTime, p.tx.rows, p.tx.relayed = it.lsn, it.commitTime, 0, false
		p.tx.skipAll, p.tx.skipRows = p.start.skip(it.lsn)
		p.splitEvents, p.splitBytes = 0, 0
	case itemRow:
		p.tx.rows++
		if p.tx.skipAll || p.tx.rows <= p.tx.skipRows {
			return nil
		}
		if err := p.begin(); err != nil {
			return err
		}
		for _, rec := range it.recs {
			if cfg.CreateTopics && !p.r.topics[rec.Topic] {
				if err := p.ensureTopic(rec); err != nil {
					return err
				}
			}
			p.cl.Produce(p.tctx, rec, p.promiseFunc)
		}
		p.tx.relayed = true
		p.events++
		p.bytes += it.size
		p.splitEvents++
		p.splitBytes += it.size
		p.next.CommitLSN, p.next.Rows, p.next.Complete = p.tx.lsn, p.tx.rows, false
		p.next.CommitTime = p.tx.commitTime
		p.markDirty()
		if p.splitEvents >= cfg.SplitEvents || p.splitBytes >= cfg.SplitBytes || time.Since(p.firstAt) > cfg.TransactionTimeout/4 {
			// A transaction too large for one Kafka transaction: commit this
			// part with (commit LSN, rows) so a restart resumes after it.
			if err := p.commit(p.pctx); err != nil {
				return err
			}
		}
	case itemCommit:
		p.inTx = false
		if p.tx.lsn >= p.next.CommitLSN {
			p.next.CommitLSN, p.next.Rows, p.next.Complete = p.tx.lsn, p.tx.rows, true
		}
		if it.commitTime.After(p.next.CommitTime) {
			p.next.CommitTime = it.commitTime
		}
		if it.end > p.next.Confirm {
			p.next.Confirm = it.end
		}
		if p.debug {
			p.r.log.Debug("relay: postgres transaction", slog.String("commit_lsn", p.tx.lsn.String()), slog.Uint64("xid", uint64(it.xid)),
				slog.Int64("rows", p.tx.rows), slog.Bool("skipped", p.tx.skipAll), slog.Int64("skipped_rows", p.tx.skipRows))
		}
		if p.tx.relayed {
			p.txns++
			p.commitTimes = append(p.commitTimes, it.commitTime)
			p.seeArrival(it.commitTime)
		}
		p.markDirty()
	case itemMessage:
		// A heartbeat outside any transaction: everything before it was
		// received, so once committed its position may be confirmed. The
		// message's LSN is the end of its WAL record, which is where the next
		// record starts: confirming even one byte more would make Postgres
		// skip a transaction whose commit record follows directly (the test
		// TestInterleavedLongShortTransactionsAcrossRestart caught exactly that).
		if !p.inTx && it.lsn > p.next.Confirm {
			p.next.Confirm = it.lsn
			// Every transaction that committed before the heartbeat has
			// been received: a gap after this checkpoint starts later.
			p.next.CommitTime = time.Now().UTC()
			p.markDirty()
		}
	}
	return nil
}

// maxGap caps one sample of the arrival EWMA: after an idle minute the
// first transactions of a busy period should not take long to count as busy.
const maxGap = 100 * time.Millisecond

// seeArrival feeds a relayed transaction's WAL commit time to the EWMA.
func (p *pump) seeArrival(commitTime time.Time) {
	p.lastArrive = time.Now()
	if !p.lastCommit.IsZero() {
		d := min(max(commitTime.Sub(p.lastCommit), 0), maxGap)
		if p.gap == 0 {
			p.gap = d
		} else {
			p.gap += (d - p.gap) / 8
		}
	}
	if commitTime.After(p.lastCommit) {
		p.lastCommit = commitTime
	}
}

// wait is how long the open batch, quiet at a transaction boundary, waits
// for more before it commits; zero or less: commit now. With a fixed Linger
// it is what is left of it. Otherwise the batch waits for the next
// transaction only while one is expected (twice the usual gap since the
// last one) before its first event has waited MaxLatency: a stream whose
// gaps are longer than the budget commits every transaction at once.
func (p *pump) wait(now time.Time) time.Duration {
	cfg := &p.r.cfg
	age := now.Sub(p.firstAt)
	if cfg.Linger > 0 {
		return cfg.Linger - age
	}
	if cfg.MaxLatency < 0 || p.events == 0 || p.gap == 0 {
		return 0
	}
	left := cfg.MaxLatency - age
	if p.gap >= left {
		return 0
	}
	return min(2*p.gap-now.Sub(p.lastArrive), left)
}

func (p *pump) markDirty() {
	if !p.dirty {
		p.dirty = true
		p.firstAt = time.Now()
	}
}

func (p *pump) begin() error {
	if p.open {
		return nil
	}
	if err := p.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("relay: begin Kafka transaction: %w", err)
	}
	p.open = true
	p.tctx, p.tcancel = context.WithTimeout(p.pctx, p.r.cfg.TransactionTimeout)
	return nil
}

// endTx releases the open transaction's produce deadline once no record of
// it is buffered any more.
func (p *pump) endTx() {
	p.open = false
	if p.tcancel != nil {
		p.tcancel()
	}
}

// commit writes the checkpoint into the open Kafka transaction, commits it,
// and only then lets the stream confirm the checkpoint's LSN to Postgres.
func (p *pump) commit(ctx context.Context) error {
	cfg := &p.r.cfg
	start := time.Now()
	if err := p.begin(); err != nil {
		return err
	}
	p.next.At = start.UTC()
	// Flush and EndTxn get TransactionTimeout, but no longer than the
	// transaction's own deadline: past it the broker has aborted it.
	deadline := start.Add(cfg.TransactionTimeout)
	if d, ok := p.tctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	// A record that already failed dooms the transaction: abort without
	// waiting for the rest (over a half-open connection, Flush would only
	// wait out cctx).
	err := p.produceErr()
	if err == nil {
		// cctx, not ctx: with the buffer full this Produce waits for room.
		p.cl.Produce(cctx, &kgo.Record{Topic: cfg.CheckpointTopic, Key: []byte(cfg.Slot), Value: p.next.marshal()}, p.promiseFunc)
		err = p.cl.Flush(cctx)
	}
	if err == nil {
		err = p.produceErr()
	}
	if err != nil {
		p.abort()
		return fmt.Errorf("relay: produce batch ending at %s: %w", p.next.CommitLSN, err)
	}
	if err := p.cl.EndTransaction(cctx, kgo.TryCommit); err != nil {
		p.r.m.kafkaTxns.WithLabelValues("failed").Inc()
		return fmt.Errorf("relay: commit Kafka transaction ending at %s (outcome unknown; restarting from the slot): %w", p.next.CommitLSN, err)
	}
	now := time.Now()
	m := p.r.m
	m.kafkaTxns.WithLabelValues("committed").Inc()
	m.commitSeconds.Observe(now.Sub(start).Seconds())
	m.batchEvents.Observe(float64(p.events))
	m.events.Add(float64(p.events))
	m.transactions.Add(float64(p.txns))
	for _, ct := range p.commitTimes {
		m.lagSeconds.Observe(now.Sub(ct).Seconds())
	}
	if p.r.cfg.hooks.afterKafkaCommit != nil {
		p.r.cfg.hooks.afterKafkaCommit()
	}
	p.done = p.next
	p.st.confirm(p.next.Confirm)
	if p.r.log.Enabled(ctx, slog.LevelDebug) {
		p.r.log.DebugContext(ctx, "relay: batch committed", slog.Int("events", p.events), slog.Int("transactions", p.txns),
			slog.String("commit_lsn", p.next.CommitLSN.String()), slog.Bool("complete", p.next.Complete),
			slog.String("confirm_lsn", p.next.Confirm.String()), slog.Duration("took", now.Sub(start)))
	}
	p.endTx()
	p.dirty = false
	p.events, p.bytes, p.txns, p.splitEvents, p.splitBytes = 0, 0, 0, 0, 0
	p.commitTimes = p.commitTimes[:0]
	return nil
}

// abort ends the open Kafka transaction without committing. Errors are only
// logged: the session ends anyway and the next one fences this producer.
func (p *pump) abort() {
	p.r.m.kafkaTxns.WithLabelValues("failed").Inc()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.cl.AbortBufferedRecords(ctx); err == nil {
		err = p.cl.EndTransaction(ctx, kgo.TryAbort)
		if err != nil {
			p.r.log.Warn("relay: abort Kafka transaction", slog.Any("error", err))
		}
	}
	p.endTx()
}

func (p *pump) produceErr() error {
	p.prodErrMu.Lock()
	defer p.prodErrMu.Unlock()
	return p.prodErr
}

// shutdown finishes the open batch within ShutdownTimeout (or aborts it),
// then stops the stream, which sends its last status update: only what
// committed is confirmed.
func (p *pump) shutdown(ctx context.Context, stopStream func()) error {
	if p.dirty {
		sctx, cancel := context.WithTimeout(p.pctx, p.r.cfg.ShutdownTimeout)
		err := p.commit(sctx)
		cancel()
		if err != nil {
			p.r.log.Warn("relay: could not finish the open Kafka transaction on shutdown; it was aborted and will be relayed again", slog.Any("error", err))
		} else {
			p.r.log.Info("relay: committed the open batch on shutdown", slog.String("confirm_lsn", p.done.Confirm.String()))
		}
	} else if p.open {
		p.abort()
	}
	stopStream()
	return ctx.Err()
}

// ensureTopic creates rec's topic when missing (Config.CreateTopics):
// compacted for records, delete retention for events.
func (p *pump) ensureTopic(rec *kgo.Record) error {
	ctx, cancel := context.WithTimeout(p.pctx, 30*time.Second)
	defer cancel()
	created, err := ensureTopic(ctx, p.cl, rec)
	if err != nil {
		return err
	}
	if created {
		p.r.log.Info("relay: created topic", slog.String("topic", rec.Topic))
	}
	p.r.topics[rec.Topic] = true
	return nil
}
