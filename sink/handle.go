package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/sql"
)

// endpoint is an Endpoint with its runtime parts.
type endpoint struct {
	*Endpoint
	limiter *rate.Limiter
	breaker *breaker
}

// recordTimeout bounds the ledger write after a call. It runs on a context
// that a revoke or Stop does not cancel: a call that was made gets recorded.
const recordTimeout = 30 * time.Second

// handle takes one delivery to its end: a call recorded, a skip, a retry
// scheduled or a dead letter. In ordered mode a non-zero time says the event
// is retrying and due then; the worker holds its key until then.
func (s *Sink) handle(ctx context.Context, ep *endpoint, d *delivery) (time.Time, error) {
	if !d.validID {
		return time.Time{}, s.deadLetterRecord(ctx, ep, d, "missing_event_id", ErrNoEventID.Error(), 0, nil)
	}
	if !d.due.IsZero() {
		if err := sleepUntil(ctx, d.due); err != nil {
			return time.Time{}, err
		}
	}
	busy := 5 * time.Millisecond
	for {
		probe, err := ep.breaker.wait(ctx)
		if err != nil {
			return time.Time{}, err
		}
		if err := ep.limiter.Wait(ctx); err != nil {
			ep.breaker.release(probe)
			return time.Time{}, fmt.Errorf("sink: rate limit: %w", err)
		}
		began := time.Now()
		c, err := s.ledger.claim(ctx, ep.Endpoint, d)
		s.metrics.ledgerSecs.WithLabelValues("claim").Observe(time.Since(began).Seconds())
		if err != nil {
			ep.breaker.release(probe)
			return time.Time{}, err
		}
		switch c.kind {
		case claimSkip:
			ep.breaker.release(probe)
			s.metrics.skipped.WithLabelValues(ep.Name, c.reason).Inc()
			return time.Time{}, nil
		case claimBusy:
			ep.breaker.release(probe)
			if err := sleepFor(ctx, busy); err != nil {
				return time.Time{}, err
			}
			busy = min(busy*2, 500*time.Millisecond)
			continue
		case claimNotDue:
			ep.breaker.release(probe)
			return c.due, nil
		case claimDeadLetter:
			ep.breaker.release(probe)
			if c.status == StatusUnknown || c.recovered {
				s.metrics.unknown.WithLabelValues(ep.Name, "dead_lettered").Inc()
			}
			return time.Time{}, s.deadLetterRow(ctx, ep, d)
		case claimReconcile:
			ep.breaker.release(probe)
			c, err = s.reconcile(ctx, ep, d)
			if err != nil || c.kind != claimCall {
				return time.Time{}, err
			}
			probe = false
		case claimCall:
			if c.recovered {
				s.metrics.unknown.WithLabelValues(ep.Name, "retried_same_key").Inc()
			}
		}
		return s.callAndRecord(ctx, ep, d, c.attempt, probe)
	}
}

// callAndRecord makes attempt n of a claimed row and records what happened.
func (s *Sink) callAndRecord(ctx context.Context, ep *endpoint, d *delivery, n int, probe bool) (time.Time, error) {
	hook(hookBeforeCall)
	if !d.due.IsZero() {
		s.logger.DebugContext(ctx, "sink: retry due", slog.String("event_id", d.ev.ID.String()), slog.Int("attempt", n),
			slog.Duration("late", time.Since(d.due)))
	}
	d.ev.Attempt = n
	// The call and its record outlive a revoke: a call that went out is recorded.
	res := s.resolveAndCall(context.WithoutCancel(ctx), ep.Endpoint, d)
	hook(hookAfterCall)
	s.metrics.calls.WithLabelValues(ep.Name, res.verdict.outcome()).Inc()
	s.metrics.callSeconds.WithLabelValues(ep.Name).Observe(res.latency.Seconds())
	ep.breaker.done(probe, res.verdict == verdictRetriable)

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if res.indeterminate && !ep.Idempotent {
		// The API ignores Idempotency-Key and may have acted: calling again
		// could charge or ship twice. The outcome is unknown until the status
		// lookup says otherwise; without one, a person decides.
		if err := s.recordRetrying(rctx, ep, d, n, &res, StatusUnknown, nil); err != nil {
			return time.Time{}, err
		}
		hook(hookAfterRecord)
		s.metrics.unknown.WithLabelValues(ep.Name, "indeterminate_call").Inc()
		if ep.Reconcile == nil {
			return time.Time{}, s.deadLetterRow(rctx, ep, d)
		}
		c, err := s.reconcile(ctx, ep, d)
		if err != nil || c.kind != claimCall {
			return time.Time{}, err
		}
		// The lookup says the call never arrived: calling again is safe.
		return s.callAndRecord(ctx, ep, d, c.attempt, false)
	}
	var held time.Time
	retry := (res.verdict == verdictRetriable && n <= ep.Retry.Retries) ||
		(res.verdict == verdictPermanent && res.class != "build_request" && n <= ep.Retry.PermanentRetries)
	switch {
	case res.verdict == verdictSucceeded:
		if err := s.recordRetrying(rctx, ep, d, n, &res, StatusSucceeded, nil); err != nil {
			return time.Time{}, err
		}
	case retry:
		due := time.Now().Add(ep.Retry.backoff(n, res.retryAfter))
		if ep.Mode == ModeRetryTopics {
			// The copy goes out before the record: a crash in between leaves the
			// row in_flight, which recovery handles; the other order could lose it.
			if err := s.publishRetry(rctx, ep, d, n+1, due); err != nil {
				return time.Time{}, err
			}
		} else {
			held = due
		}
		if err := s.recordRetrying(rctx, ep, d, n, &res, StatusRetrying, &due); err != nil {
			return time.Time{}, err
		}
		s.metrics.retries.WithLabelValues(ep.Name).Inc()
		s.logger.DebugContext(ctx, "sink: retry scheduled", slog.String("endpoint", ep.Name),
			slog.String("event_id", d.ev.ID.String()), slog.Int("attempt", n), slog.Time("due", due), slog.String("class", res.class))
	default:
		if err := s.recordRetrying(rctx, ep, d, n, &res, StatusFailed, nil); err != nil {
			return time.Time{}, err
		}
		hook(hookAfterRecord)
		return time.Time{}, s.deadLetterRecord(rctx, ep, d, res.class, res.err.Error(), n, nil)
	}
	hook(hookAfterRecord)
	return held, nil
}

// recordRetrying records with a few tries: the call is made, so losing its
// record to a blip would turn a known outcome into an unknown one.
func (s *Sink) recordRetrying(ctx context.Context, ep *endpoint, d *delivery, n int, res *callResult, status string, next *time.Time) error {
	var err error
	for try := range 5 {
		began := time.Now()
		err = s.ledger.record(ctx, ep.Endpoint, d.ev.ID, n, res, status, next)
		s.metrics.ledgerSecs.WithLabelValues("record").Observe(time.Since(began).Seconds())
		if err == nil || errors.Is(err, ErrLostClaim) || ctx.Err() != nil {
			return err
		}
		s.logger.WarnContext(ctx, "sink: record failed, retrying", slog.Any("error", err))
		if sleepFor(ctx, time.Duration(try+1)*200*time.Millisecond) != nil {
			break
		}
	}
	return err
}

// reconcile runs the status lookup for an unknown row, retrying a failed
// lookup with backoff; past the retries the event is dead-lettered.
func (s *Sink) reconcile(ctx context.Context, ep *endpoint, d *delivery) (claimResult, error) {
	for try := 1; ; try++ {
		rctx, cancel := ep.ctxTimeout(ctx)
		r, err := ep.Reconcile(rctx, &d.ev)
		cancel()
		if err == nil {
			c, err := s.ledger.reconciled(ctx, ep.Endpoint, d.ev.ID, r)
			if err == nil && c.reason != "reconciled_elsewhere" {
				res := "not_landed"
				if r.Landed {
					res = "landed"
				}
				s.metrics.unknown.WithLabelValues(ep.Name, "reconciled_"+res).Inc()
				s.logger.InfoContext(ctx, "sink: unknown call reconciled", slog.String("endpoint", ep.Name),
					slog.String("event_id", d.ev.ID.String()), slog.Bool("landed", r.Landed))
			}
			return c, err
		}
		if ctx.Err() != nil {
			return claimResult{}, ctx.Err()
		}
		s.logger.WarnContext(ctx, "sink: status lookup failed", slog.String("endpoint", ep.Name),
			slog.String("event_id", d.ev.ID.String()), slog.Int("try", try), slog.Any("error", err))
		if try > ep.Retry.Retries {
			s.metrics.unknown.WithLabelValues(ep.Name, "dead_lettered").Inc()
			return claimResult{kind: claimSkip}, s.deadLetterRecord(ctx, ep, d, "unknown_outcome",
				"outcome unknown and the status lookup kept failing: "+err.Error(), 0, nil)
		}
		if err := sleepFor(ctx, ep.Retry.backoff(try, 0)); err != nil {
			return claimResult{}, err
		}
	}
}

// publishRetry re-publishes d to its retry tier topic, due at due, for attempt next.
func (s *Sink) publishRetry(ctx context.Context, ep *endpoint, d *delivery, next int, due time.Time) error {
	tier := ep.Retry.tierFor(time.Until(due))
	r := &kgo.Record{Topic: RetryTopic(d.ev.Topic, tier), Key: d.rec.Key, Value: d.rec.Value}
	for _, h := range d.rec.Headers {
		if !isSinkHeader(h.Key) {
			r.Headers = append(r.Headers, h)
		}
	}
	r.Headers = append(r.Headers,
		kgo.RecordHeader{Key: HeaderRetryAttempt, Value: []byte(strconv.Itoa(next))},
		kgo.RecordHeader{Key: HeaderRetryDue, Value: []byte(due.UTC().Format(time.RFC3339Nano))},
		kgo.RecordHeader{Key: HeaderOriginTopic, Value: []byte(d.ev.Topic)},
		kgo.RecordHeader{Key: HeaderOriginPartition, Value: []byte(strconv.Itoa(int(d.ev.Partition)))},
		kgo.RecordHeader{Key: HeaderOriginOffset, Value: []byte(strconv.FormatInt(d.ev.Offset, 10))},
	)
	if err := s.client.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("sink: publish retry to %s: %w", r.Topic, err)
	}
	return nil
}

// deadLetterRow dead-letters a row found failed (or unknown with no lookup)
// on a redelivery, with the class and message the ledger kept.
func (s *Sink) deadLetterRow(ctx context.Context, ep *endpoint, d *delivery) error {
	row, err := s.ledger.q.LedgerGet(ctx, s.ledger.db, sql.LedgerGetParams{Endpoint: ep.Name, EventID: d.ev.ID})
	if err != nil {
		return fmt.Errorf("sink: read ledger row: %w", err)
	}
	class, msg := "unknown_outcome", "outcome unknown: the sink died during a call to an API that does not honour idempotency keys"
	if row.Status == StatusFailed {
		class = "failed"
		if row.LastStatusCode != nil {
			class = "http_" + strconv.Itoa(int(*row.LastStatusCode))
		}
		if row.LastError != nil {
			msg = *row.LastError
		}
	}
	return s.deadLetterRecord(ctx, ep, d, class, msg, int(row.Attempts), &row.Status)
}

// deadLetterRecord writes d to the dead-letter topic with its attempt history
// and moves the row (failed or unknown) to dead_lettered. With no dead-letter
// topic the row stays as it is.
func (s *Sink) deadLetterRecord(ctx context.Context, ep *endpoint, d *delivery, class, msg string, attempts int, from *string) error {
	topic := ep.deadLetterTopic(d.ev.Topic)
	if topic == "" {
		s.logger.WarnContext(ctx, "sink: no dead-letter topic; the ledger row keeps the failure",
			slog.String("endpoint", ep.Name), slog.String("event_id", d.ev.ID.String()), slog.String("class", class))
		return nil
	}
	var history []envelope.Attempt
	if d.validID {
		h, err := s.ledger.history(ctx, ep.Endpoint, d.ev.ID)
		if err != nil {
			return err
		}
		history = h
		if attempts == 0 {
			attempts = len(h)
		}
	}
	dl := envelope.DeadLetter{
		OriginTopic: d.ev.Topic, OriginPartition: d.ev.Partition, OriginOffset: d.ev.Offset,
		OriginTimestamp: d.rec.Timestamp, Group: s.cfg.Group, Stage: "sink", StageName: s.cfg.Name,
		ErrorClass: class, ErrorMessage: msg, Attempt: attempts, History: history, At: time.Now(),
	}
	r := &kgo.Record{Topic: topic, Key: d.rec.Key, Value: d.rec.Value}
	for _, h := range d.rec.Headers {
		if !isSinkHeader(h.Key) {
			r.Headers = append(r.Headers, h)
		}
	}
	for _, h := range dl.Headers() {
		r.Headers = append(r.Headers, kgo.RecordHeader(h))
	}
	if err := s.client.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("sink: dead-letter to %s: %w", topic, err)
	}
	s.metrics.deadLetters.WithLabelValues(ep.Name, class).Inc()
	s.logger.WarnContext(ctx, "sink: dead-lettered", slog.String("endpoint", ep.Name), slog.String("event_id", d.ev.ID.String()),
		slog.String("topic", topic), slog.String("class", class), slog.Int("attempts", attempts))
	if !d.validID {
		return nil
	}
	for _, st := range []string{StatusFailed, StatusUnknown} {
		if from != nil && *from != st {
			continue
		}
		ok, err := s.ledger.transition(ctx, ep.Endpoint, d.ev.ID, st, StatusDeadLettered, "")
		if err != nil || ok {
			return err
		}
	}
	return nil
}

func sleepFor(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func sleepUntil(ctx context.Context, at time.Time) error {
	if d := time.Until(at); d > 0 {
		return sleepFor(ctx, d)
	}
	return nil
}
