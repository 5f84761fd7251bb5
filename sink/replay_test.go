package sink

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/ops/deadletter"
)

// TestReplayedDeadLetterIsCalledOnceMore: a call the API refused goes to the
// dead-letter topic; `outbox dlq replay` sends it back with a higher replay
// count, and the sink tries it again (the ledger reopens the row). A
// redelivered copy of that same replay makes no further call.
func TestReplayedDeadLetterIsCalledOnceMore(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ids := b.produce(1, 1)
	b.api.setFail(func(key string, n int) (int, string) {
		if key == ids[0].String() && n == 1 {
			return 422, "" // the first call is refused; a person fixes the cause
		}
		return 0, ""
	})
	b.start(b.config("replay", b.endpoint(false)))
	b.waitSettled(30*time.Second, StatusDeadLettered)

	ctx := context.Background()
	b.kafka.CreateTopic(b.topic+".dlt.replayed", 1, map[string]string{"cleanup.policy": "compact"})
	res, err := deadletter.Replay(ctx, b.kafka.Opts(), deadletter.ReplayConfig{Topic: b.topic + ".dlt"})
	require.NoError(t, err)
	require.Len(t, res.Outcomes, 1)
	b.waitSettled(30*time.Second, StatusSucceeded)
	requests, performed := b.api.snapshot()
	require.Equal(t, 2, requests[ids[0].String()])
	require.Equal(t, 1, performed[ids[0].String()])
	require.Equal(t, int32(1), b.rows()[0].Replays)

	// Redeliver the replayed copy, then a fresh event behind it on the same
	// partition: once the fresh one is done the copy was seen, and skipped.
	recs, err := b.kafka.ReadCommitted(ctx, b.topic)
	require.NoError(t, err)
	var replayed *kgo.Record
	for _, r := range recs {
		for _, h := range r.Headers {
			if h.Key == envelope.HeaderReplayCount {
				replayed = r
			}
		}
	}
	require.NotNil(t, replayed, "the replay carries its count")
	cl, err := kgo.NewClient(b.kafka.Opts()...)
	require.NoError(t, err)
	defer cl.Close()
	dup := &kgo.Record{Topic: b.topic, Key: replayed.Key, Value: replayed.Value, Headers: replayed.Headers}
	require.NoError(t, cl.ProduceSync(ctx, dup).FirstErr())
	fresh := b.produce(1, 1)
	b.waitSettled(30*time.Second, StatusSucceeded)
	requests, _ = b.api.snapshot()
	require.Equal(t, 2, requests[ids[0].String()], "a redelivered replay makes no second call")
	require.Equal(t, 1, requests[fresh[0].String()])
}
