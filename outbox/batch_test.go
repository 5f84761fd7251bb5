package outbox_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/outbox"
)

// orderBatch runs a whole order request as BEGIN, one pipelined batch, COMMIT.
func orderBatch(ctx context.Context, b *testBundle, key outbox.Key, fp, orderID string, hold time.Duration) (outbox.Claim, error) {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return outbox.Claim{}, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	batch := b.writer.NewBatch()
	if err := batch.ClaimKey(key, fp); err != nil {
		return outbox.Claim{}, err
	}
	batch.Queue(`INSERT INTO orders VALUES ($1, 1299) ON CONFLICT DO NOTHING`, orderID)
	if _, err := batch.Write(ctx, orderCreated(orderID)); err != nil {
		return outbox.Claim{}, err
	}
	if err := batch.CompleteKey(outbox.Response{StatusCode: 201, Body: []byte(orderID)}); err != nil {
		return outbox.Claim{}, err
	}
	claim, err := batch.Run(ctx, tx)
	if err != nil || claim.Replay != nil {
		return claim, err
	}
	time.Sleep(hold)
	return claim, tx.Commit(ctx)
}

func TestBatchCommitsOrderEventsAndKeyInOneRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.Config{})
	ctx := context.Background()
	claim, err := orderBatch(ctx, b, outbox.Key{Key: "k"}, "fp", "A-1", 0)
	require.NoError(t, err)
	require.Nil(t, claim.Replay)
	require.Equal(t, 1, b.count(t, "orders"))
	require.Equal(t, 1, b.count(t, "outbox.events"))

	// The retry replays and its queued statements are rolled back with the tx.
	claim, err = orderBatch(ctx, b, outbox.Key{Key: "k"}, "fp", "A-2", 0)
	require.NoError(t, err)
	require.NotNil(t, claim.Replay)
	require.Equal(t, "A-1", string(claim.Replay.Body))
	require.Equal(t, 1, b.count(t, "orders"))
	require.Equal(t, 1, b.count(t, "outbox.events"))

	_, err = orderBatch(ctx, b, outbox.Key{Key: "k"}, "other", "A-3", 0)
	require.ErrorIs(t, err, outbox.ErrKeyMismatch)
	require.Equal(t, 1, b.count(t, "outbox.events"))

	// Validation happens at queue time.
	bad := orderCreated("A-4")
	bad.Payload = []byte("{")
	_, err = b.writer.NewBatch().Write(ctx, bad)
	require.ErrorIs(t, err, outbox.ErrInvalidJSON)
	require.ErrorIs(t, b.writer.NewBatch().CompleteKey(outbox.Response{}), outbox.ErrKeyNotClaimed)
}

func TestBatchConcurrentClaimsHaveOneWinner(t *testing.T) {
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
			claim, err := orderBatch(ctx, b, outbox.Key{Key: "same"}, "fp", "A-1", 200*time.Millisecond)
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
	require.Equal(t, 1, b.count(t, "outbox.events"))
	require.Equal(t, 1, b.count(t, "orders"))
}
