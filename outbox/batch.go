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
type Batch struct {
	w       *Writer
	b       pgx.Batch
	key     *Key
	fp      string
	claim   sql.ClaimKeyRow
	claimed bool
}

// NewBatch starts an empty batch.
func (w *Writer) NewBatch() *Batch { return &Batch{w: w} }

// ClaimKey queues the claim of key. Queue it first, so that nothing else runs
// before the key's lock is held.
func (b *Batch) ClaimKey(key Key, fingerprint string) error {
	if key.Key == "" || len(key.Key) > 255 || len(key.Scope) > 255 {
		return fmt.Errorf("%w: must be 1 to 255 bytes", ErrInvalidKey)
	}
	if b.key != nil {
		return errors.New("outbox: batch already claims a key")
	}
	b.key, b.fp = &key, fingerprint
	// Arguments in the generated query's order (sql.ClaimKeyParams).
	b.b.Queue(sql.Qualify(b.w.cfg.Schema, sql.ClaimKey), key.Scope, key.Key, fingerprint, nil, b.w.cfg.KeyTTL.Seconds()).
		QueryRow(func(row pgx.Row) error {
			r := &b.claim
			b.claimed = true
			return row.Scan(&r.Locked, &r.Claimed, &r.Fingerprint, &r.Status, &r.ResponseCode, &r.ResponseHeaders, &r.ResponseBody, &r.ExpiresAt)
		})
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

// CompleteKey queues storing resp for the claimed key.
func (b *Batch) CompleteKey(resp Response) error {
	if b.key == nil {
		return ErrKeyNotClaimed
	}
	_, err := b.w.complete(context.Background(), queueDB{&b.b}, *b.key, resp)
	return err
}

// Run sends the batch on tx and reads every result. With a claim queued, it
// returns like Writer.ClaimKey, except that when the claim is not won tx has
// been rolled back. Commit tx after a nil error with no replay.
func (b *Batch) Run(ctx context.Context, tx pgx.Tx) (Claim, error) {
	err := tx.SendBatch(ctx, &b.b).Close()
	if err != nil {
		return Claim{}, fmt.Errorf("outbox: run batch: %w", dbError(err))
	}
	if b.key == nil {
		return Claim{}, nil
	}
	if !b.claimed {
		return Claim{}, errors.New("outbox: run batch: claim result missing")
	}
	claim, err := claimOutcome(b.claim, b.fp)
	if err != nil || claim.Replay != nil {
		if rbErr := tx.Rollback(ctx); rbErr != nil && err == nil {
			return Claim{}, fmt.Errorf("outbox: roll back unclaimed batch: %w", rbErr)
		}
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
