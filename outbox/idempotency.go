package outbox

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/sql"
)

// Key identifies an idempotency key. Scope separates key spaces (a customer
// account, an API client): the same key in two scopes is two keys.
type Key struct {
	Scope string
	Key   string
}

// Response is what CompleteKey stores and a replay returns.
type Response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

// Claim is the outcome of ClaimKey when it returns no error.
type Claim struct {
	// Replay is the stored response of an earlier request with the same key and
	// fingerprint; when set, answer with it and do nothing else. When nil, this
	// transaction owns the key: do the work, then CompleteKey before commit.
	Replay *Response
}

// ClaimKey claims an idempotency key in tx, in one round trip. fingerprint
// identifies the request (see Fingerprint): a key reused with another request
// is ErrKeyMismatch. A key another transaction is working on is ErrKeyInFlight,
// answered at once rather than after waiting for that transaction.
//
// The claim commits and rolls back with tx: after a rollback the key is free.
func (w *Writer) ClaimKey(ctx context.Context, tx pgx.Tx, key Key, fingerprint string) (Claim, error) {
	if err := validKey(key); err != nil {
		return Claim{}, err
	}
	row, err := w.q.ClaimKey(ctx, w.db(tx), sql.ClaimKeyParams{
		Scope:       key.Scope,
		IdemKey:     key.Key,
		Fingerprint: fingerprint,
		TtlSeconds:  w.cfg.KeyTTL.Seconds(),
	})
	if err != nil {
		return Claim{}, fmt.Errorf("outbox: claim idempotency key: %w", err)
	}
	return claimOutcome(row, fingerprint)
}

// claimOutcome reads a claim query's row.
func claimOutcome(row sql.ClaimKeyRow, fingerprint string) (Claim, error) {
	switch {
	case !row.Locked:
		return Claim{}, ErrKeyInFlight
	case row.Claimed:
		return Claim{}, nil
	case row.Fingerprint == nil:
		// Committed by another transaction after this statement's snapshot: it
		// is done now, and a retry will see its response.
		return Claim{}, ErrKeyInFlight
	case *row.Fingerprint != fingerprint:
		return Claim{}, ErrKeyMismatch
	case row.Status == nil || *row.Status != "completed" || row.ResponseCode == nil:
		return Claim{}, ErrKeyInFlight
	}
	resp := &Response{StatusCode: int(*row.ResponseCode), Body: row.ResponseBody}
	if len(row.ResponseHeaders) > 0 {
		if err := json.Unmarshal(row.ResponseHeaders, &resp.Header); err != nil {
			return Claim{}, fmt.Errorf("outbox: decode stored response headers: %w", err)
		}
	}
	return Claim{Replay: resp}, nil
}

// CompleteKey stores the response for a key this transaction claimed, so that
// retries replay it once tx commits.
func (w *Writer) CompleteKey(ctx context.Context, tx pgx.Tx, key Key, resp Response) error {
	n, err := w.complete(ctx, tx, key, resp)
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrKeyNotClaimed
	}
	return nil
}

func (w *Writer) complete(ctx context.Context, db sql.DBTX, key Key, resp Response) (int64, error) {
	code, headers, body, err := storedResponse(resp)
	if err != nil {
		return 0, err
	}
	n, err := w.q.CompleteKey(ctx, w.db(db), sql.CompleteKeyParams{
		ResponseCode:    code,
		ResponseHeaders: headers,
		ResponseBody:    body,
		Scope:           key.Scope,
		IdemKey:         key.Key,
	})
	if err != nil {
		return 0, fmt.Errorf("outbox: complete idempotency key: %w", err)
	}
	return n, nil
}

// storedResponse is resp as the idempotency_keys columns hold it.
func storedResponse(resp Response) (code *int32, headers, body []byte, err error) {
	if len(resp.Header) > 0 {
		if headers, err = json.Marshal(resp.Header); err != nil {
			return nil, nil, nil, fmt.Errorf("outbox: encode response headers: %w", err)
		}
	}
	c := int32(resp.StatusCode)
	return &c, headers, nonNilBytes(resp.Body), nil
}

// validKey is the check ClaimKey makes before any SQL.
func validKey(key Key) error {
	if key.Key == "" || len(key.Key) > 255 || len(key.Scope) > 255 {
		return fmt.Errorf("%w: must be 1 to 255 bytes", ErrInvalidKey)
	}
	return nil
}

// Fingerprint hashes the parts of a request that must match for a replay
// (typically method, path and body) into a hex SHA-256. Parts are length-
// prefixed, so ("ab", "c") and ("a", "bc") differ.
func Fingerprint(parts ...[]byte) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}
