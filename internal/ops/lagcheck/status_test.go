package lagcheck_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/ops/lagcheck"
)

// window builds samples from (committed, lag) pairs, one second apart.
func window(pairs ...int64) []lagcheck.Sample {
	t0 := time.Unix(1_700_000_000, 0)
	var w []lagcheck.Sample
	for i := 0; i+1 < len(pairs); i += 2 {
		w = append(w, lagcheck.Sample{At: t0.Add(time.Duration(i) * time.Second), Committed: pairs[i], Lag: pairs[i+1], End: pairs[i] + pairs[i+1]})
	}
	return w
}

func TestEvaluate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		w       []lagcheck.Sample
		members int
		want    lagcheck.Status
	}{
		{"empty", nil, 1, lagcheck.StatusOK},
		{"caught up", window(10, 0, 20, 0), 1, lagcheck.StatusOK},
		{"zero once in window", window(10, 5, 20, 0, 25, 3), 1, lagcheck.StatusOK},
		{"no members", window(10, 5, 10, 7), 0, lagcheck.StatusStop},
		{"single sample no members", window(10, 5), 0, lagcheck.StatusStop},
		{"single sample members", window(10, 5), 1, lagcheck.StatusOK},
		{"rewind", window(10, 5, 4, 11), 1, lagcheck.StatusRewind},
		{"stall", window(10, 5, 10, 5, 10, 9), 1, lagcheck.StatusStall},
		{"warn: moving but lag grows", window(10, 5, 12, 6, 15, 8), 1, lagcheck.StatusWarn},
		{"ok: lag shrinks", window(10, 5, 14, 3, 16, 2), 1, lagcheck.StatusOK},
	} {
		require.Equal(t, tc.want, lagcheck.Evaluate(tc.w, tc.members), tc.name)
	}
}

func TestGroupStatus(t *testing.T) {
	t.Parallel()
	require.Equal(t, lagcheck.StatusOK, lagcheck.GroupStatus(nil))
	require.Equal(t, lagcheck.StatusWarn, lagcheck.GroupStatus([]lagcheck.Status{lagcheck.StatusOK, lagcheck.StatusWarn}))
	require.Equal(t, lagcheck.StatusErr, lagcheck.GroupStatus([]lagcheck.Status{lagcheck.StatusWarn, lagcheck.StatusStall}))
	require.Equal(t, "REWIND", lagcheck.StatusRewind.String())
}
