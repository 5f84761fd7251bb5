package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxrelay/outbox/sql"
)

// Batch pipelines a request's whole transaction into one round trip: the key
// claim, the caller's own statements, the events and the stored response are
// queued, then sent together by Run. An order transaction is then BEGIN, one
// batch, COMMIT: as many round trips as the business insert alone.
//
// Statements run in the order queued. Because the caller's statements are sent
// before the claim's outcome is known, Run rolls tx back itself when the claim
// is not won (a replay, a mismatch, a key in flight): nothing queued can commit
// without the key. Use ClaimKey, Write and CompleteKey one by one when the
// work depends on the claim's outcome before it starts.
//
// ClaimAndWrite instead of ClaimKey, Write and CompleteKey queues one
// statement for all three: the claim, the events and, when the response is
// known before the work, the key stored completed with it.
type Batch struct {
	w       *Writer
	b       pgx.Batch
	key     *Key
	fp      string
	claim   sql.ClaimKeyRow
	claimed bool
	// stored: the claim stores the response already (ClaimAndWrite with one).
	stored bool
}

// NewBatch starts an empty batch.
func (w *Writer) NewBatch() *Batch { return &Batch{w: w} }

// ClaimKey queues the claim of key. Queue it first, so that nothing else runs
// before the key's lock is held.
func (b *Batch) ClaimKey(key Key, fingerprint string) error {
	if err := validKey(key); err != nil {
		return err
	}
	if b.key != nil {
		return errors.New("outbox: batch already claims a key")
	}
	b.key, b.fp = &key, fingerprint
	// Arguments in the generated query's order (sql.ClaimKeyParams).
	b.b.Queue(sql.Qualify(b.w.cfg.Schema, sql.ClaimKey), key.Scope, key.Key, fingerprint, nil, b.w.cfg.KeyTTL.Seconds()).
		QueryRow(b.scanClaim)
	return nil
}

// ClaimAndWrite queues Writer.ClaimAndWrite's one statement as the batch's
// claim: key's claim and, only when it is won, the events' insert, and with
// resp the key stored completed (then CompleteKey is not called). Queue it
// first, instead of ClaimKey. It validates the events now (an invalid event
// queues nothing) and returns their ids; Run says whether they were written.
func (b *Batch) ClaimAndWrite(ctx context.Context, key Key, fingerprint string, resp *Response, events ...Event) ([]uuid.UUID, error) {
	if b.key != nil {
		return nil, errors.New("outbox: batch already claims a key")
	}
	if b.w.needsClaimCheck(events) {
		return nil, fmt.Errorf("outbox: batch: %w", ErrClaimCheckUnsupported)
	}
	var rec recordDB
	_, ids, err := b.w.claimAndWrite(ctx, b.w.db(&rec), key, fingerprint, resp, events)
	switch {
	case err == nil:
		return nil, errors.New("outbox: batch: the claim query ran instead of being queued")
	case !errors.Is(err, errRecorded):
		return nil, err
	}
	b.key, b.fp, b.stored = &key, fingerprint, resp != nil
	b.b.Queue(rec.query, rec.args...).QueryRow(b.scanClaim)
	return ids, nil
}

// scanClaim reads the claim's row, which every claim query shapes as ClaimKey's.
func (b *Batch) scanClaim(row pgx.Row) error {
	r := &b.claim
	if err := row.Scan(&r.Locked, &r.Claimed, &r.Fingerprint, &r.Status, &r.ResponseCode, &r.ResponseHeaders, &r.ResponseBody, &r.ExpiresAt); err != nil {
		return err
	}
	b.claimed = true
	return nil
}

// Queue adds one of the caller's statements; read its result with the
// returned QueuedQuery's Exec, Query or QueryRow callbacks.
func (b *Batch) Queue(query string, args ...any) *pgx.QueuedQuery {
	return b.b.Queue(query, args...)
}

// Write validates events now (an invalid event queues nothing) and queues
// their insert. It returns the event ids.
func (b *Batch) Write(ctx context.Context, events ...Event) ([]uuid.UUID, error) {
	var ids []uuid.UUID
	// Run the single-statement writer against a recorder that queues instead
	// of executing, so the batch and Write share one code path and one query.
	err := b.w.write(ctx, queueDB{&b.b}, events, &ids)
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// CompleteKey queues storing resp for the claimed key. It returns
// ErrKeyNotClaimed when the batch claims no key, or when its ClaimAndWrite
// stores a response already.
func (b *Batch) CompleteKey(resp Response) error {
	if b.key == nil || b.stored {
		return ErrKeyNotClaimed
	}
	_, err := b.w.complete(context.Background(), queueDB{&b.b}, *b.key, resp)
	return err
}

// Run sends the batch on tx and reads every result. With a claim queued, it
// returns like Writer.ClaimKey, except that when the claim is not won tx has
// been rolled back: then the claim's outcome is returned even when one of the
// caller's statements failed after it (a retry's order row that exists
// already), since none of them was to run without the key. Commit tx after a
// nil error with no replay.
func (b *Batch) Run(ctx context.Context, tx pgx.Tx) (Claim, error) {
	runErr := tx.SendBatch(ctx, &b.b).Close()
	if b.key == nil || !b.claimed || (b.claim.Locked && b.claim.Claimed) {
		switch {
		case runErr != nil:
			return Claim{}, fmt.Errorf("outbox: run batch: %w", dbError(runErr))
		case b.key != nil && !b.claimed:
			return Claim{}, errors.New("outbox: run batch: claim result missing")
		}
		return Claim{}, nil
	}
	claim, err := claimOutcome(b.claim, b.fp)
	if rbErr := tx.Rollback(ctx); rbErr != nil && err == nil {
		return Claim{}, fmt.Errorf("outbox: roll back unclaimed batch: %w", rbErr)
	}
	return claim, err
}

// queueDB is a sql.DBTX that queues Exec calls into a pgx.Batch. Only the
// writer's :exec queries go through it.
type queueDB struct{ b *pgx.Batch }

func (q queueDB) Exec(_ context.Context, query string, args ...any) (pgconn.CommandTag, error) {
	q.b.Queue(query, args...)
	return pgconn.CommandTag{}, nil
}

func (q queueDB) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errors.New("outbox: batch: Query cannot be queued")
}

func (q queueDB) QueryRow(context.Context, string, ...any) pgx.Row {
	return errRow{errors.New("outbox: batch: QueryRow cannot be queued")}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
