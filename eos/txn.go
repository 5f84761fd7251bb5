package eos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/schema"
)

// recordID names an input record: where it was read from.
type recordID struct {
	topic     string
	partition int32
	offset    int64
}

func idOf(r *kgo.Record) recordID { return recordID{r.Topic, r.Partition, r.Offset} }

// txnStats counts one transaction's work, credited to the metrics only once
// the transaction commits.
type txnStats struct {
	in, out, dead int
}

// produceOutcome collects the promises of one transaction's produces.
type produceOutcome struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	first error
	// refused are inputs whose output the broker rejected for good.
	refused map[recordID]error
}

func (p *produceOutcome) promise(in recordID) func(*kgo.Record, error) {
	p.wg.Add(1)
	return func(_ *kgo.Record, err error) {
		defer p.wg.Done()
		if err == nil {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.first == nil {
			p.first = err
		}
		if permanentProduceError(err) {
			if p.refused == nil {
				p.refused = map[recordID]error{}
			}
			p.refused[in] = err
		}
	}
}

// permanentProduceError reports whether the broker (or client) will refuse
// this record however often it is retried.
func permanentProduceError(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) ||
		errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) ||
		errors.Is(err, kerr.CorruptMessage)
}

// session runs transactions on sess until ctx is done (it returns ctx.Err())
// or the session fails (it returns why).
func (s *Stage) session(ctx context.Context, sess *kgo.GroupTransactSession) error {
	for {
		recs, err := s.poll(ctx, sess)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			continue
		}
		if err := s.transact(ctx, sess, recs); err != nil {
			return err
		}
	}
}

// poll returns up to MaxRecordsPerTxn records, in partition order, waiting for
// the first and then at most Linger for more.
func (s *Stage) poll(ctx context.Context, sess *kgo.GroupTransactSession) ([]*kgo.Record, error) {
	fs := sess.PollRecords(ctx, s.cfg.MaxRecordsPerTxn)
	if err := s.fetchErr(ctx, fs); err != nil {
		return nil, err
	}
	recs := fs.Records()
	if len(recs) == 0 {
		return nil, nil
	}
	s.m.observeLag(fs)
	deadline := time.Now().Add(s.cfg.Linger)
	for len(recs) < s.cfg.MaxRecordsPerTxn {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		lctx, cancel := context.WithTimeout(ctx, wait)
		fs := sess.PollRecords(lctx, s.cfg.MaxRecordsPerTxn-len(recs))
		cancel()
		if err := s.fetchErr(ctx, fs); err != nil {
			return nil, err
		}
		more := fs.Records()
		if len(more) == 0 {
			break
		}
		s.m.observeLag(fs)
		recs = append(recs, more...)
	}
	return recs, nil
}

// fetchErr returns an error that ends the session (ctx done, client closed)
// and logs the partition errors franz-go keeps retrying on its own.
func (s *Stage) fetchErr(ctx context.Context, fs kgo.Fetches) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if fs.IsClientClosed() {
		return kgo.ErrClientClosed
	}
	fs.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		s.log.WarnContext(ctx, "eos: fetch error", slog.String("topic", t), slog.Int("partition", int(p)), slog.Any("error", err))
	})
	return nil
}

// transact processes recs in one transaction: transform each, produce the
// outputs and dead letters, and commit them with the input offsets, or abort.
// It returns an error only when the session must be rebuilt.
func (s *Stage) transact(ctx context.Context, sess *kgo.GroupTransactSession, recs []*kgo.Record) error {
	if err := sess.Begin(); err != nil {
		return fmt.Errorf("eos: begin transaction: %w", err)
	}
	var (
		st  txnStats
		out produceOutcome
		// retry is a transient failure (the schema registry did not
		// answer): abort, and rebuild the session after a backoff.
		retry error
	)
	for _, r := range recs {
		if ctx.Err() != nil {
			break
		}
		st.in++
		id := idOf(r)
		var (
			outs []*kgo.Record
			derr error
		)
		if refusal, ok := s.rejected[id]; ok {
			delete(s.rejected, id)
			derr = &RefusedError{Err: refusal}
		} else {
			outs, derr = s.apply(ctx, r)
		}
		if derr == nil {
			for _, o := range outs {
				if o == nil {
					continue
				}
				if o.Topic == "" && s.cfg.OutputTopic == "" {
					outs, derr = nil, errNoOutputTopic
					break
				}
			}
		}
		if derr != nil {
			if ctx.Err() != nil {
				break // the transform gave up because we are stopping
			}
			if errors.Is(derr, schema.ErrRegistry) {
				retry = derr
				break
			}
			st.dead++
			dl := s.deadLetter(r, derr)
			sess.Produce(ctx, dl, out.promise(id))
			continue
		}
		for _, o := range outs {
			if o == nil {
				continue
			}
			if o.Topic == "" {
				o.Topic = s.cfg.OutputTopic
			}
			st.out++
			sess.Produce(ctx, o, out.promise(id))
		}
	}

	// Decide with every produce answered: flush, then wait for the promises.
	// A failed flush (ctx done) leaves records buffered: End's abort fails
	// them, so waiting for their promises first could hang on a dead broker.
	flushErr := sess.Client().Flush(ctx)
	if flushErr == nil {
		out.wg.Wait()
	}
	commit := kgo.TryCommit
	switch {
	case ctx.Err() != nil:
		commit = kgo.TryAbort
	case retry != nil:
		commit = kgo.TryAbort
		s.log.WarnContext(ctx, "eos: schema registry unavailable; aborting", slog.Any("error", retry))
	case flushErr != nil:
		commit = kgo.TryAbort
		s.log.WarnContext(ctx, "eos: flush failed; aborting", slog.Any("error", flushErr))
	case out.first != nil:
		commit = kgo.TryAbort
		for id, err := range out.refused {
			s.rejected[id] = err
		}
		s.log.WarnContext(ctx, "eos: produce failed; aborting", slog.Any("error", out.first),
			slog.Int("refused_inputs", len(out.refused)))
	}
	if err := s.end(ctx, sess, commit, st); err != nil || retry == nil {
		return err
	}
	return fmt.Errorf("eos: decode input: %w", retry)
}

// end ends the transaction. GroupTransactSession.End aborts instead of
// committing when the group rebalanced, and retries an EndTxn that answered
// kerr.OperationNotAttempted as an abort (as franz-go's transactions example
// does); any error it returns leaves the transaction's outcome to the next
// InitProducerID, so the session is rebuilt.
func (s *Stage) end(ctx context.Context, sess *kgo.GroupTransactSession, commit kgo.TransactionEndTry, st txnStats) error {
	// End must not be cut short by ctx (franz-go: cancelling may leave the
	// client in an invalid state); bound it by the transaction timeout instead,
	// after which the broker aborts on its own.
	timeout := s.cfg.TransactionTimeout
	if ctx.Err() != nil {
		timeout = min(timeout, s.cfg.ShutdownTimeout)
	}
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	start := time.Now()
	committed, err := sess.End(ectx, commit)
	if committed && err == nil {
		s.m.commitSeconds.Observe(time.Since(start).Seconds())
		s.m.txnCommitted.Inc()
		s.m.recordsIn.Add(float64(st.in))
		s.m.recordsOut.Add(float64(st.out))
		s.m.deadLettered.Add(float64(st.dead))
		s.log.DebugContext(ctx, "eos: transaction committed", slog.Int("in", st.in), slog.Int("out", st.out),
			slog.Int("dead_lettered", st.dead), slog.Duration("took", time.Since(start)))
		return nil
	}
	s.m.txnAborted.Inc()
	if err != nil {
		if errors.Is(err, kerr.OperationNotAttempted) {
			// End already retried as an abort; reaching here means even that
			// was not confirmed. Rebuild to let InitProducerID settle it.
			return fmt.Errorf("eos: end transaction not attempted: %w", err)
		}
		return fmt.Errorf("eos: end transaction (outcome settled by the next producer init): %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.log.InfoContext(ctx, "eos: transaction aborted; resuming from the committed offsets",
		slog.Bool("wanted_commit", bool(commit)), slog.Int("in", st.in))
	return nil
}
