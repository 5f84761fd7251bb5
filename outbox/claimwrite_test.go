package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
)

// claimAndWriteOrder is an order request through ClaimAndWrite: the claim,
// the event and the stored response in one statement, then the order row.
func claimAndWriteOrder(ctx context.Context, b *testBundle, key outbox.Key, fp, orderID string, hold time.Duration) (outbox.Claim, []uuid.UUID, error) {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return outbox.Claim{}, nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	resp := outbox.Response{StatusCode: 201, Header: http.Header{"Location": {"/orders/" + orderID}}, Body: []byte(orderID)}
	claim, ids, err := b.writer.ClaimAndWrite(ctx, tx, key, fp, &resp, orderCreated(orderID))
	if err != nil || claim.Replay != nil {
		return claim, ids, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO orders VALUES ($1, 1299)`, orderID); err != nil {
		return claim, nil, err
	}
	time.Sleep(hold)
	return claim, ids, tx.Commit(ctx)
}

func TestClaimAndWriteCommitsEventAndStoredResponse(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	key := outbox.Key{Scope: "customer-7", Key: "checkout-1"}

	claim, ids, err := claimAndWriteOrder(ctx, b, key, "fp", "A-1", 0)
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	require.Len(t, ids, 1)
	require.Equal(t, 1, b.count(t, "orders"))
	require.Equal(t, 1, b.count(t, "outbox.events"))
	var status string
	var completed bool
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT status, completed_at IS NOT NULL FROM outbox.idempotency_keys WHERE scope = $1 AND idem_key = $2`,
		key.Scope, key.Key).Scan(&status, &completed))
	require.Equal(t, "completed", status, "the key is stored completed at once")
	require.True(t, completed)
	var eventID uuid.UUID
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT event_id FROM outbox.events`).Scan(&eventID))
	require.Equal(t, ids[0], eventID)

	// A retry replays the stored response and writes nothing more.
	claim, ids, err = claimAndWriteOrder(ctx, b, key, "fp", "A-2", 0)
	require.NoError(t, err)
	require.NotNil(t, claim.Replay)
	require.Nil(t, ids)
	require.Equal(t, 201, claim.Replay.StatusCode)
	require.Equal(t, "A-1", string(claim.Replay.Body))
	require.Equal(t, "/orders/A-1", claim.Replay.Header.Get("Location"))
	require.Equal(t, 1, b.count(t, "outbox.events"))
	require.Equal(t, 1, b.count(t, "orders"))

	// The same key with another request is a mismatch; in another scope it is another key.
	_, _, err = claimAndWriteOrder(ctx, b, key, "other", "A-3", 0)
	require.ErrorIs(t, err, outbox.ErrKeyMismatch)
	_, _, err = claimAndWriteOrder(ctx, b, outbox.Key{Scope: "customer-8", Key: key.Key}, "other", "A-3", 0)
	require.NoError(t, err)
	require.Equal(t, 2, b.count(t, "outbox.events"))
}

// TestClaimAndWriteWithoutResponse: with no response the key is claimed as
// ClaimKey claims it, and CompleteKey stores the answer later; with one,
// CompleteKey has nothing to complete.
func TestClaimAndWriteWithoutResponse(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	key := outbox.Key{Key: "k"}

	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	claim, ids, err := b.writer.ClaimAndWrite(ctx, tx, key, "fp", nil, orderCreated("A-1"), orderCreated("A-1"))
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	require.Len(t, ids, 2)
	require.NoError(t, b.writer.CompleteKey(ctx, tx, key, outbox.Response{StatusCode: 202, Body: []byte("later")}))
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 2, b.count(t, "outbox.events"))

	tx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	claim, err = b.writer.ClaimKey(ctx, tx, key, "fp")
	require.NoError(t, err)
	require.NotNil(t, claim.Replay)
	require.Equal(t, "later", string(claim.Replay.Body))

	// A key stored with its response has no started claim to complete.
	other := outbox.Key{Key: "k2"}
	_, _, err = b.writer.ClaimAndWrite(ctx, tx, other, "fp", &outbox.Response{StatusCode: 201}, orderCreated("A-2"))
	require.NoError(t, err)
	require.ErrorIs(t, b.writer.CompleteKey(ctx, tx, other, outbox.Response{StatusCode: 200}), outbox.ErrKeyNotClaimed)
}

// TestClaimAndWriteCommittedWithoutResponseIsInFlight: a claim without a
// response committed without CompleteKey stays in flight, as with ClaimKey,
// and the later claim writes no event.
func TestClaimAndWriteCommittedWithoutResponseIsInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		_, _, err := b.writer.ClaimAndWrite(ctx, tx, outbox.Key{Key: "k"}, "fp", nil)
		return err
	}))
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, ids, err := b.writer.ClaimAndWrite(ctx, tx, outbox.Key{Key: "k"}, "fp", &outbox.Response{StatusCode: 201}, orderCreated("A-1"))
	require.ErrorIs(t, err, outbox.ErrKeyInFlight)
	require.Nil(t, ids)
	// The statement wrote nothing and the transaction is still usable.
	require.NoError(t, tx.Commit(ctx))
	require.Zero(t, b.count(t, "outbox.events"))
}

// TestClaimAndWriteConcurrentClaimsHaveOneWinner: 50 requests with one key
// at once write one event and one order; the rest are in flight or replayed.
func TestClaimAndWriteConcurrentClaimsHaveOneWinner(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	var (
		mu                        sync.Mutex
		winners, inFlight, replay int
		wg                        sync.WaitGroup
		start                     = make(chan struct{})
	)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			claim, _, err := claimAndWriteOrder(ctx, b, outbox.Key{Key: "same"}, "fp", "A-1", 200*time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, outbox.ErrKeyInFlight):
				inFlight++
			case err != nil:
				t.Error(err)
			case claim.Replay != nil:
				replay++
			default:
				winners++
			}
		}()
	}
	close(start)
	wg.Wait()
	require.Equal(t, 1, winners)
	require.Equal(t, 49, inFlight+replay)
	require.Positive(t, inFlight)
	require.Equal(t, 1, b.count(t, "outbox.events"))
	require.Equal(t, 1, b.count(t, "orders"))
}

// TestClaimAndWriteTakesOverExpiredKey: an expired key is claimed again, its
// old response replaced by the new one.
func TestClaimAndWriteTakesOverExpiredKey(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{KeyTTL: time.Second})
	ctx := context.Background()
	key := outbox.Key{Key: "k"}
	_, _, err := claimAndWriteOrder(ctx, b, key, "fp-1", "A-1", 0)
	require.NoError(t, err)
	time.Sleep(1100 * time.Millisecond)
	claim, ids, err := claimAndWriteOrder(ctx, b, key, "fp-2", "A-2", 0)
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	require.Len(t, ids, 1)
	require.Equal(t, 2, b.count(t, "outbox.events"))
	var body []byte
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT response_body FROM outbox.idempotency_keys WHERE idem_key = 'k'`).Scan(&body))
	require.Equal(t, "A-2", string(body))
}

// TestClaimAndWriteValidatesFirst: an invalid event or key claims nothing and
// leaves the transaction usable; a database rejection carries the sentinel.
func TestClaimAndWriteValidatesFirst(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{MaxPayloadBytes: 4 << 20})
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	bad := orderCreated("A-1")
	bad.Payload = []byte(`{"order_id":`)
	_, _, err = b.writer.ClaimAndWrite(ctx, tx, outbox.Key{Key: "k"}, "fp", nil, orderCreated("A-0"), bad)
	require.ErrorIs(t, err, outbox.ErrInvalidJSON)
	var verr *outbox.ValidationError
	require.ErrorAs(t, err, &verr)
	require.Equal(t, 1, verr.Index)
	_, _, err = b.writer.ClaimAndWrite(ctx, tx, outbox.Key{}, "fp", nil, orderCreated("A-0"))
	require.ErrorIs(t, err, outbox.ErrInvalidKey)
	require.NoError(t, tx.Commit(ctx))
	require.Zero(t, b.count(t, "outbox.events"))
	require.Zero(t, b.count(t, "outbox.idempotency_keys"))

	big := orderCreated("A-2")
	big.Payload = []byte(`"` + strings.Repeat("x", 2<<20) + `"`)
	tx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, _, err = b.writer.ClaimAndWrite(ctx, tx, outbox.Key{Key: "k"}, "fp", nil, big)
	require.ErrorIs(t, err, outbox.ErrPayloadTooLarge, "the events_validate trigger's limit")
	require.Equal(t, "OB005", sqlState(err))
}

// TestClaimAndWriteInOtherSchema: the statement names the configured schema.
func TestClaimAndWriteInOtherSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, outbox.Config{}) // migrates "outbox"
	m, err := migrations.Open(ctx, b.url, "shop_outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	w, err := outbox.New(outbox.Config{Schema: "shop_outbox"})
	require.NoError(t, err)
	for _, batched := range []bool{false, true} {
		key := outbox.Key{Key: fmt.Sprint("k-", batched)}
		require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			if !batched {
				_, _, err := w.ClaimAndWrite(ctx, tx, key, "fp", &outbox.Response{StatusCode: 201}, orderCreated("A-1"))
				return err
			}
			batch := w.NewBatch()
			if _, err := batch.ClaimAndWrite(ctx, key, "fp", &outbox.Response{StatusCode: 201}, orderCreated("A-1"), orderCreated("A-1")); err != nil {
				return err
			}
			_, err := batch.Run(ctx, tx)
			return err
		}))
	}
	require.Equal(t, 3, b.count(t, "shop_outbox.events"))
	require.Equal(t, 2, b.count(t, "shop_outbox.idempotency_keys"))
	require.Zero(t, b.count(t, "outbox.events"))
	require.Zero(t, b.count(t, "outbox.idempotency_keys"))
}

// orderBatchOnce is orderBatch with ClaimAndWrite as the batch's claim.
func orderBatchOnce(ctx context.Context, b *testBundle, key outbox.Key, fp, orderID string) (outbox.Claim, error) {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return outbox.Claim{}, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	batch := b.writer.NewBatch()
	if _, err := batch.ClaimAndWrite(ctx, key, fp, &outbox.Response{StatusCode: 201, Body: []byte(orderID)}, orderCreated(orderID)); err != nil {
		return outbox.Claim{}, err
	}
	batch.Queue(`INSERT INTO orders VALUES ($1, 1299)`, orderID)
	claim, err := batch.Run(ctx, tx)
	if err != nil || claim.Replay != nil {
		return claim, err
	}
	return claim, tx.Commit(ctx)
}

func TestBatchClaimAndWrite(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	claim, err := orderBatchOnce(ctx, b, outbox.Key{Key: "k"}, "fp", "A-1")
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	require.Equal(t, 1, b.count(t, "orders"))
	require.Equal(t, 1, b.count(t, "outbox.events"))

	// The retry is a replay, although its order row (the same id) would
	// fail: Run answers with the claim's outcome and rolls back.
	claim, err = orderBatchOnce(ctx, b, outbox.Key{Key: "k"}, "fp", "A-1")
	require.NoError(t, err)
	require.NotNil(t, claim.Replay)
	require.Equal(t, "A-1", string(claim.Replay.Body))
	_, err = orderBatchOnce(ctx, b, outbox.Key{Key: "k"}, "other", "A-1")
	require.ErrorIs(t, err, outbox.ErrKeyMismatch)
	require.Equal(t, 1, b.count(t, "outbox.events"))

	batch := b.writer.NewBatch()
	_, err = batch.ClaimAndWrite(ctx, outbox.Key{Key: "k2"}, "fp", &outbox.Response{StatusCode: 201}, orderCreated("A-2"))
	require.NoError(t, err)
	require.ErrorIs(t, batch.CompleteKey(outbox.Response{StatusCode: 200}), outbox.ErrKeyNotClaimed, "the response is stored already")
	require.Error(t, batch.ClaimKey(outbox.Key{Key: "k3"}, "fp"), "one claim per batch")
	_, err = batch.ClaimAndWrite(ctx, outbox.Key{Key: "k3"}, "fp", nil)
	require.Error(t, err, "one claim per batch")

	bad := orderCreated("A-3")
	bad.AggregateID = ""
	_, err = b.writer.NewBatch().ClaimAndWrite(ctx, outbox.Key{Key: "k4"}, "fp", nil, bad)
	require.ErrorIs(t, err, outbox.ErrMissingAggregateID)

	// Without a response, CompleteKey is queued after the caller's statements.
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	batch = b.writer.NewBatch()
	ids, err := batch.ClaimAndWrite(ctx, outbox.Key{Key: "k5"}, "fp", nil, orderCreated("A-5"))
	require.NoError(t, err)
	require.Len(t, ids, 1)
	batch.Queue(`INSERT INTO orders VALUES ('A-5', 1)`)
	require.NoError(t, batch.CompleteKey(outbox.Response{StatusCode: 201, Body: []byte("A-5")}))
	claim, err = batch.Run(ctx, tx)
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	require.NoError(t, tx.Commit(ctx))
	var status string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT status FROM outbox.idempotency_keys WHERE idem_key = 'k5'`).Scan(&status))
	require.Equal(t, "completed", status)
}
