package sink

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTimedOutCallToNonIdempotentAPIIsReconciled: the API does the work and
// answers after the call's timeout. An API that ignores Idempotency-Key must
// not be called again on a timeout (that would ship or top up twice): the row
// goes unknown, the status lookup finds the work, and it ends succeeded.
// Found by the demo's audit: the shipping mock was called twice for one event.
func TestTimedOutCallToNonIdempotentAPIIsReconciled(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.api.slow = func(_ string, n int) time.Duration {
		if n == 1 {
			return 2 * time.Second
		}
		return 0
	}
	ids := b.produce(5, 1)
	ep := b.endpoint(false)
	ep.Timeout = 300 * time.Millisecond
	lookup, err := NewLookupReconciler(b.api.srv.URL+"/lookup/{{.ID}}", "", nil)
	require.NoError(t, err)
	ep.Reconcile = lookup
	b.start(b.config("slow-nonidem", ep))
	c := b.waitSettled(30*time.Second, StatusSucceeded)
	require.Equal(t, 5, c[StatusSucceeded])
	requests, performed := b.api.snapshot()
	for _, id := range ids {
		require.Equal(t, 1, requests[id.String()], "a timed-out call to a non-idempotent API is never repeated")
		require.Equal(t, 1, performed[id.String()])
	}
	for _, r := range b.rows() {
		require.NotNil(t, r.ReconciledAt, "settled by the status lookup")
	}
}

// TestTimedOutCallToIdempotentAPIRetriesSameKey: an API that honours keys is
// simply called again with the same key.
func TestTimedOutCallToIdempotentAPIRetriesSameKey(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.api.honourKeys = true
	b.api.slow = func(_ string, n int) time.Duration {
		if n == 1 {
			return 2 * time.Second
		}
		return 0
	}
	ids := b.produce(3, 1)
	ep := b.endpoint(true)
	ep.Timeout = 300 * time.Millisecond
	ep.Retry.Initial = 50 * time.Millisecond
	b.start(b.config("slow-idem", ep))
	b.waitSettled(30*time.Second, StatusSucceeded)
	requests, performed := b.api.snapshot()
	for _, id := range ids {
		require.GreaterOrEqual(t, requests[id.String()], 2, "retried with the same key")
		require.Equal(t, 1, performed[id.String()])
	}
}
