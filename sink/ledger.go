package sink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/sql"
)

// Ledger statuses (sink_ledger.status).
const (
	StatusPending      = "pending"
	StatusInFlight     = "in_flight"
	StatusSucceeded    = "succeeded"
	StatusRetrying     = "retrying"
	StatusFailed       = "failed"
	StatusUnknown      = "unknown"
	StatusDeadLettered = "dead_lettered"
)

// Statuses lists every ledger status, in the order a row usually passes them.
var Statuses = []string{StatusPending, StatusInFlight, StatusSucceeded, StatusRetrying, StatusFailed, StatusUnknown, StatusDeadLettered}

// lockSpace is the first key of the two-key advisory locks sink instances hold
// ("obsx"); the second is the instance's owner id written to locked_by.
const lockSpace int32 = 0x6f627378

// ledger is the sink's view of sink_ledger and sink_attempts.
type ledger struct {
	pool  *pgxpool.Pool
	db    sql.DBTX
	q     *sql.Queries
	owner int32
	lock  *pgx.Conn // holds the owner lock for the instance's lifetime
	sch   string
}

func newLedger(pool *pgxpool.Pool, schema string) *ledger {
	return &ledger{pool: pool, db: sql.InSchema(pool, schema), q: sql.New(), sch: schema}
}

// takeOwnerLock picks an owner id and holds its advisory lock on a dedicated
// session, taken out of the pool.
func (l *ledger) takeOwnerLock(ctx context.Context) error {
	c, err := l.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("sink: acquire owner-lock session: %w", err)
	}
	conn := c.Hijack()
	for range 16 {
		owner := rand.Int32N(1<<31-2) + 1
		ok, err := l.q.LedgerTakeOwnerLock(ctx, conn, sql.LedgerTakeOwnerLockParams{LockSpace: lockSpace, Owner: owner})
		if err != nil {
			_ = conn.Close(ctx)
			return fmt.Errorf("sink: take owner lock: %w", err)
		}
		if ok {
			l.owner, l.lock = owner, conn
			return nil
		}
	}
	_ = conn.Close(ctx)
	return errors.New("sink: no free owner id after 16 tries")
}

// checkOwnerLock pings the lock session.
func (l *ledger) checkOwnerLock(ctx context.Context) error {
	if err := l.lock.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrOwnerLockLost, err)
	}
	return nil
}

func (l *ledger) releaseOwnerLock(ctx context.Context) {
	if l.lock != nil {
		_ = l.lock.Close(ctx) // closing the session releases the lock
		l.lock = nil
	}
}

// claimKind is what the ledger says to do with a delivery.
type claimKind int

const (
	claimCall       claimKind = iota // row is in_flight under us: call with attempt n
	claimSkip                        // nothing to do (done, or owned by another copy)
	claimBusy                        // a live instance is calling right now: wait and look again
	claimReconcile                   // outcome unknown: run the status lookup
	claimDeadLetter                  // failed or unknown without a lookup: write the dead letter
	claimNotDue                      // ordered mode: retrying, not due yet
)

type claimResult struct {
	kind      claimKind
	attempt   int       // claimCall: the attempt number
	status    string    // the row's status before the claim
	due       time.Time // claimNotDue
	recovered bool      // the row was left in_flight by a dead instance
	reason    string    // claimSkip
}

// tx runs f in one transaction with the schema applied.
func (l *ledger) tx(ctx context.Context, f func(db sql.DBTX) error) error {
	return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		return f(sql.InSchema(tx, l.sch))
	})
}

// claim decides, in one transaction, what to do with d, and claims the row
// (in_flight, attempt n+1, locked by this instance) when the answer is a call.
func (l *ledger) claim(ctx context.Context, ep *Endpoint, d *delivery) (claimResult, error) {
	if d.expected == 1 {
		// Fast path: a new event is inserted already in_flight, one statement.
		n, err := l.q.LedgerClaimNew(ctx, l.db, sql.LedgerClaimNewParams{
			Endpoint: ep.Name, EventID: d.ev.ID, IdempotencyKey: d.ev.IdempotencyKey(),
			Topic: d.ev.Topic, KafkaPartition: d.ev.Partition, KafkaOffset: d.ev.Offset, Owner: l.owner,
		})
		switch {
		case err == nil:
			return claimResult{kind: claimCall, attempt: int(n), status: StatusPending}, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return claimResult{}, fmt.Errorf("sink: claim %s/%s: %w", ep.Name, d.ev.ID, err)
		}
	}
	var res claimResult
	err := l.tx(ctx, func(db sql.DBTX) error {
		res = claimResult{}
		row, err := l.q.LedgerLock(ctx, db, sql.LedgerLockParams{
			Endpoint: ep.Name, EventID: d.ev.ID, IdempotencyKey: d.ev.IdempotencyKey(),
			Topic: d.ev.Topic, KafkaPartition: d.ev.Partition, KafkaOffset: d.ev.Offset, LockSpace: lockSpace,
		})
		if err != nil {
			return fmt.Errorf("lock row: %w", err)
		}
		res.status = row.Status
		start := func() error {
			n, err := l.q.LedgerStartAttempt(ctx, db, sql.LedgerStartAttemptParams{Owner: l.owner, Endpoint: ep.Name, EventID: d.ev.ID})
			if err != nil {
				return fmt.Errorf("start attempt: %w", err)
			}
			res.kind, res.attempt = claimCall, int(n)
			return nil
		}
		switch row.Status {
		case StatusDeadLettered:
			if d.replays > row.Replays {
				// A person replayed the dead letter: one more try. A redelivered
				// copy of the same replay finds replays equal and is skipped.
				n, err := l.q.LedgerReopen(ctx, db, sql.LedgerReopenParams{Replays: d.replays, Endpoint: ep.Name, EventID: d.ev.ID})
				if err != nil || n != 1 {
					return fmt.Errorf("reopen replayed dead letter: %d rows: %w", n, err)
				}
				return start()
			}
			res.kind, res.reason = claimSkip, row.Status
			return nil
		case StatusSucceeded:
			res.kind, res.reason = claimSkip, row.Status
			return nil
		case StatusFailed:
			res.kind = claimDeadLetter
			return nil
		case StatusUnknown:
			res.kind = claimReconcile
			if ep.Reconcile == nil {
				res.kind = claimDeadLetter
			}
			return nil
		case StatusInFlight:
			if !row.OwnerGone {
				res.kind = claimBusy
				return nil
			}
			// The instance that claimed this row died during its call: the
			// provider may or may not have it.
			res.recovered = true
			msg := "indeterminate: the sink instance died during the call"
			if err := l.q.LedgerInsertAttempt(ctx, db, sql.LedgerInsertAttemptParams{
				Endpoint: ep.Name, EventID: d.ev.ID, N: row.Attempts, Outcome: "indeterminate",
				Error: &msg, StartedAt: time.Now(),
			}); err != nil {
				return fmt.Errorf("record indeterminate attempt: %w", err)
			}
			if ep.Idempotent {
				// The API honours Idempotency-Key: calling again with the same key
				// cannot do the work twice.
				return start()
			}
			n, err := l.q.LedgerTransition(ctx, db, sql.LedgerTransitionParams{
				ToStatus: StatusUnknown, FromStatus: StatusInFlight, LastError: &msg, Endpoint: ep.Name, EventID: d.ev.ID,
			})
			if err != nil || n != 1 {
				return fmt.Errorf("mark unknown: %d rows: %w", n, err)
			}
			res.kind = claimReconcile
			if ep.Reconcile == nil {
				res.kind = claimDeadLetter
			}
			return nil
		case StatusPending:
			return start()
		case StatusRetrying:
			if ep.Mode == ModeOrdered {
				if row.NextAttemptAt != nil && row.NextAttemptAt.After(time.Now()) {
					res.kind, res.due = claimNotDue, *row.NextAttemptAt
					return nil
				}
				return start()
			}
			// Retry topics: only the copy scheduled for the next attempt calls;
			// the source record and stale copies are done.
			if d.expected == int(row.Attempts)+1 {
				return start()
			}
			res.kind, res.reason = claimSkip, "retry_scheduled"
			return nil
		}
		return fmt.Errorf("unexpected ledger status %q", row.Status)
	})
	if err != nil {
		return claimResult{}, fmt.Errorf("sink: claim %s/%s: %w", ep.Name, d.ev.ID, err)
	}
	return res, nil
}

// markPending makes sure a row exists (pending) for an event held behind its
// key in ordered mode, so on-call sees it waiting.
func (l *ledger) markPending(ctx context.Context, ep *Endpoint, d *delivery) error {
	_, err := l.q.LedgerLock(ctx, l.db, sql.LedgerLockParams{
		Endpoint: ep.Name, EventID: d.ev.ID, IdempotencyKey: d.ev.IdempotencyKey(),
		Topic: d.ev.Topic, KafkaPartition: d.ev.Partition, KafkaOffset: d.ev.Offset, LockSpace: lockSpace,
	})
	if err != nil {
		return fmt.Errorf("sink: mark pending %s/%s: %w", ep.Name, d.ev.ID, err)
	}
	return nil
}

// record writes the outcome of this instance's call and its attempt row, in
// one statement (one transaction).
func (l *ledger) record(ctx context.Context, ep *Endpoint, id uuid.UUID, attempt int, res *callResult, status string, next *time.Time) error {
	a := attemptParams(ep, id, attempt, res)
	n, err := l.q.LedgerRecordOutcome(ctx, l.db, sql.LedgerRecordOutcomeParams{
		N: a.N, Outcome: a.Outcome, StatusCode: a.StatusCode, BodyDigest: a.BodyDigest, BodyHead: a.BodyHead,
		Error: a.Error, LatencyMs: a.LatencyMs, StartedAt: a.StartedAt,
		Status: status, ProviderRef: nonEmpty(res.providerRef), NextAttemptAt: next,
		Endpoint: ep.Name, EventID: id, Owner: l.owner,
	})
	if err == nil && n != 1 {
		err = ErrLostClaim
	}
	if err != nil {
		return fmt.Errorf("sink: record %s/%s attempt %d: %w", ep.Name, id, attempt, err)
	}
	return nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func attemptParams(ep *Endpoint, id uuid.UUID, attempt int, res *callResult) sql.LedgerInsertAttemptParams {
	p := sql.LedgerInsertAttemptParams{
		Endpoint: ep.Name, EventID: id, N: int32(attempt), Outcome: res.verdict.outcome(),
		BodyHead: res.head, StartedAt: res.started,
	}
	if res.indeterminate && !ep.Idempotent {
		p.Outcome = "indeterminate"
	}
	if res.statusCode != 0 {
		c := int32(res.statusCode)
		p.StatusCode = &c
	}
	if res.digest != "" {
		p.BodyDigest = &res.digest
	}
	if res.err != nil {
		s := res.err.Error()
		p.Error = &s
	}
	ms := res.latency.Milliseconds()
	p.LatencyMs = &ms
	return p
}

// transition moves a row that is not in flight from one status to another.
func (l *ledger) transition(ctx context.Context, ep *Endpoint, id uuid.UUID, from, to string, lastErr string) (bool, error) {
	p := sql.LedgerTransitionParams{ToStatus: to, FromStatus: from, Endpoint: ep.Name, EventID: id}
	if lastErr != "" {
		p.LastError = &lastErr
	}
	n, err := l.q.LedgerTransition(ctx, l.db, p)
	if err != nil {
		return false, fmt.Errorf("sink: %s/%s %s -> %s: %w", ep.Name, id, from, to, err)
	}
	return n == 1, nil
}

// reconciled applies a status lookup's answer to an unknown row: landed makes
// it succeeded; not landed makes it pending again and claims it for a call,
// which is no longer blind. Returns the claim (claimCall or claimSkip).
func (l *ledger) reconciled(ctx context.Context, ep *Endpoint, id uuid.UUID, r Reconciliation) (claimResult, error) {
	var res claimResult
	err := l.tx(ctx, func(db sql.DBTX) error {
		row, err := l.q.LedgerGet(ctx, db, sql.LedgerGetParams{Endpoint: ep.Name, EventID: id})
		if err != nil {
			return err
		}
		to, note := StatusPending, "reconciled: the provider never received the call"
		if r.Landed {
			to, note = StatusSucceeded, "reconciled: the provider has the call"
		}
		p := sql.LedgerTransitionParams{ToStatus: to, FromStatus: StatusUnknown, Reconciled: true, Endpoint: ep.Name, EventID: id}
		if r.ProviderRef != "" {
			p.ProviderRef = &r.ProviderRef
		}
		n, err := l.q.LedgerTransition(ctx, db, p)
		if err != nil {
			return err
		}
		if n != 1 {
			res.kind, res.reason = claimSkip, "reconciled_elsewhere"
			return nil
		}
		if err := l.q.LedgerInsertAttempt(ctx, db, sql.LedgerInsertAttemptParams{
			Endpoint: ep.Name, EventID: id, N: max(row.Attempts, 1), Outcome: "reconciled", Error: &note, StartedAt: time.Now(),
		}); err != nil {
			return err
		}
		if r.Landed {
			res.kind, res.reason = claimSkip, "reconciled_landed"
			return nil
		}
		a, err := l.q.LedgerStartAttempt(ctx, db, sql.LedgerStartAttemptParams{Owner: l.owner, Endpoint: ep.Name, EventID: id})
		if err != nil {
			return err
		}
		res.kind, res.attempt = claimCall, int(a)
		return nil
	})
	if err != nil {
		return claimResult{}, fmt.Errorf("sink: reconcile %s/%s: %w", ep.Name, id, err)
	}
	return res, nil
}

// history returns a row's attempts as a dead letter carries them.
func (l *ledger) history(ctx context.Context, ep *Endpoint, id uuid.UUID) ([]envelope.Attempt, error) {
	rows, err := l.q.LedgerAttempts(ctx, l.db, sql.LedgerAttemptsParams{Endpoint: ep.Name, EventID: id})
	if err != nil {
		return nil, fmt.Errorf("sink: history %s/%s: %w", ep.Name, id, err)
	}
	out := make([]envelope.Attempt, 0, len(rows))
	for _, r := range rows {
		a := envelope.Attempt{N: int(r.N), At: r.FinishedAt}
		if r.StatusCode != nil {
			a.Status = int(*r.StatusCode)
		}
		if r.Error != nil {
			a.Error = *r.Error
		}
		if r.LatencyMs != nil {
			a.LatencyMS = *r.LatencyMs
		}
		if a.Error == "" && r.Outcome != "succeeded" {
			a.Error = r.Outcome
		}
		out = append(out, a)
	}
	return out, nil
}
