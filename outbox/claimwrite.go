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

// ClaimAndWrite is ClaimKey and Write in one statement, one round trip: it
// claims key and, only when the claim is won, inserts events. With resp, the
// key is stored completed with resp at once, so no CompleteKey follows (it
// would return ErrKeyNotClaimed) and a retry replays resp once tx commits;
// with a nil resp the key is stored started, as ClaimKey does: do the work,
// then CompleteKey before commit.
//
// It returns like ClaimKey. A replay, ErrKeyInFlight and ErrKeyMismatch
// write nothing and return no ids; a won claim returns the events' ids in
// order. Events are validated first, as Write does: on a validation error
// nothing is claimed and tx stays usable. No events is allowed: the claim,
// and resp, alone.
//
// Use it when the response is known before the business rows are written
// (the service makes the order id): the order transaction is then its own
// statements plus this one. Commit and rollback mean what they mean for
// ClaimKey and Write: after a rollback the key is free and no event exists.
func (w *Writer) ClaimAndWrite(ctx context.Context, tx pgx.Tx, key Key, fingerprint string, resp *Response, events ...Event) (Claim, []uuid.UUID, error) {
	row, ids, err := w.claimAndWrite(ctx, w.db(tx), key, fingerprint, resp, events)
	if err != nil {
		return Claim{}, nil, err
	}
	claim, err := claimOutcome(row, fingerprint)
	if err != nil || claim.Replay != nil {
		return claim, nil, err
	}
	return claim, ids, nil
}

// claimAndWrite validates its arguments and runs the claim-and-write query
// on db: the one-event form for one event, the unnest form otherwise. The ids
// are the events' once they are validated, also when the query failed (a
// Batch records the query instead of running it).
func (w *Writer) claimAndWrite(ctx context.Context, db sql.DBTX, key Key, fingerprint string, resp *Response, events []Event) (sql.ClaimKeyRow, []uuid.UUID, error) {
	if err := validKey(key); err != nil {
		return sql.ClaimKeyRow{}, nil, err
	}
	p, err := w.eventParams(ctx, events)
	if err != nil {
		return sql.ClaimKeyRow{}, nil, err
	}
	// A claim-checked payload is stored before the claim: on a replay or a
	// lost claim it is a row no event references, dropped with its day.
	if err := w.putClaims(ctx, db, events, &p); err != nil {
		return sql.ClaimKeyRow{}, nil, err
	}
	var (
		code             *int32
		headers, respRaw []byte
	)
	if resp != nil {
		if code, headers, respRaw, err = storedResponse(*resp); err != nil {
			return sql.ClaimKeyRow{}, nil, err
		}
	}
	var row sql.ClaimKeyRow
	if len(events) == 1 {
		var r sql.ClaimKeyWriteEventRow
		r, err = w.q.ClaimKeyWriteEvent(ctx, db, sql.ClaimKeyWriteEventParams{
			Scope: key.Scope, IdemKey: key.Key, Fingerprint: fingerprint,
			ResponseCode: code, ResponseHeaders: headers, ResponseBody: respRaw, TtlSeconds: w.cfg.KeyTTL.Seconds(),
			EventID: p.EventIds[0], AggregateType: p.AggregateTypes[0], AggregateID: p.AggregateIds[0],
			EventType: p.EventTypes[0], Topic: p.Topics[0], FanoutTopics: nonNil(events[0].FanoutTopics),
			Kind: p.Kinds[0], ContentType: p.ContentTypes[0], Payload: p.Payloads[0], Headers: p.Headers[0],
			OccurredAt: p.OccurredAts[0],
		})
		row = sql.ClaimKeyRow(r)
	} else {
		var r sql.ClaimKeyWriteEventsRow
		r, err = w.q.ClaimKeyWriteEvents(ctx, db, sql.ClaimKeyWriteEventsParams{
			Scope: key.Scope, IdemKey: key.Key, Fingerprint: fingerprint,
			ResponseCode: code, ResponseHeaders: headers, ResponseBody: respRaw, TtlSeconds: w.cfg.KeyTTL.Seconds(),
			EventIds: p.EventIds, AggregateTypes: p.AggregateTypes, AggregateIds: p.AggregateIds,
			EventTypes: p.EventTypes, Topics: p.Topics, Fanouts: p.Fanouts, Kinds: p.Kinds,
			ContentTypes: p.ContentTypes, Payloads: p.Payloads, Headers: p.Headers, OccurredAts: p.OccurredAts,
		})
		row = sql.ClaimKeyRow(r)
	}
	if err != nil {
		return row, p.EventIds, fmt.Errorf("outbox: claim idempotency key and write %d events: %w", len(events), dbError(err))
	}
	return row, p.EventIds, nil
}

// errRecorded is what recordDB's row returns: the query was kept, not run.
var errRecorded = errors.New("outbox: query recorded for a batch")

// recordDB is a sql.DBTX that runs nothing: it keeps the query and the
// arguments a generated :one method sends, so that Batch queues exactly what
// the method would have run, in its argument order.
type recordDB struct {
	query string
	args  []any
}

func (r *recordDB) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return pgconn.CommandTag{}, errors.New("outbox: batch: Exec cannot be recorded")
}

func (r *recordDB) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errors.New("outbox: batch: Query cannot be recorded")
}

func (r *recordDB) QueryRow(_ context.Context, query string, args ...any) pgx.Row {
	r.query, r.args = query, args
	return errRow{errRecorded}
}
