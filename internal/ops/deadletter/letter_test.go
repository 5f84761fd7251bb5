package deadletter_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/ops/deadletter"
)

// TestParseWhen: the --since/--until forms of `outbox dlq` and the console.
func TestParseWhen(t *testing.T) {
	t.Parallel()
	got, err := deadletter.ParseWhen("")
	require.NoError(t, err)
	require.True(t, got.IsZero(), "empty bounds nothing")

	got, err = deadletter.ParseWhen("2026-01-02T15:04:05+01:00")
	require.NoError(t, err)
	require.True(t, time.Date(2026, 1, 2, 14, 4, 5, 0, time.UTC).Equal(got), "RFC 3339 with its offset: %s", got)

	before := time.Now()
	got, err = deadletter.ParseWhen("2h")
	require.NoError(t, err)
	require.WithinRange(t, got, before.Add(-2*time.Hour), time.Now().Add(-2*time.Hour), "a duration is that long before now")

	for _, bad := range []string{"yesterday", "2026-01-02", "15:04"} {
		_, err = deadletter.ParseWhen(bad)
		require.EqualError(t, err, `time "`+bad+`": want RFC 3339 (2026-01-02T15:04:05Z) or a duration ago (2h)`)
	}
}
