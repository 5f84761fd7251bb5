package eos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

var errPoison = errors.New("poison record")

// poisonTransform decodes {"n": N}; N%10 == 3 is rejected with an error, 5 is
// not JSON at all, 7 panics, and N == 11 yields an output too large for the
// broker.
func poisonTransform(_ context.Context, r *kgo.Record) ([]*kgo.Record, error) {
	var v struct{ N int }
	if err := json.Unmarshal(r.Value, &v); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	switch {
	case v.N%10 == 3:
		return nil, fmt.Errorf("n=%d: %w", v.N, errPoison)
	case v.N%10 == 7:
		panic(fmt.Sprintf("n=%d", v.N))
	case v.N == 11:
		return []*kgo.Record{{Key: r.Key, Value: make([]byte, 2<<20)}}, nil
	}
	return []*kgo.Record{{Key: r.Key, Value: []byte(fmt.Sprintf(`{"n":%d,"ok":true}`, v.N))}}, nil
}

// TestPoisonRecordsToDeadLetter sends rejected records (error, undecodable,
// panic, output the broker refuses) to the dead-letter topic with every
// origin and error header, while the records around them flow on.
func TestPoisonRecordsToDeadLetter(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	in := k.Topic("poison-in", 3, nil)
	out := k.Topic("poison-out", 2, nil)
	dlq := k.Topic("poison-dlq", 1, nil)
	const n = 300

	cl, err := kgo.NewClient(append(k.Opts(), kgo.DefaultProduceTopic(in))...)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var recs []*kgo.Record
	for i := range n {
		v := []byte(fmt.Sprintf(`{"n":%d}`, i))
		if i%10 == 5 {
			v = []byte(fmt.Sprintf(`{not json %d`, i))
		}
		recs = append(recs, &kgo.Record{Key: []byte(strconv.Itoa(i % 7)), Value: v,
			Headers: []kgo.RecordHeader{{Key: envelope.HeaderEventID, Value: []byte(fmt.Sprintf("ev-%d", i))}}})
	}
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
	cl.Close()

	reg := prometheus.NewRegistry()
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	s, err := New(Config{
		Name:            "poison-stage",
		KafkaOpts:       k.Opts(),
		Group:           "poison-" + in,
		InputTopics:     []string{in},
		OutputTopic:     out,
		DeadLetterTopic: dlq,
		TransactionalID: "poison-" + in,
		Transform:       poisonTransform,
		Registerer:      reg,
		SessionTimeout:  6 * time.Second, TransactionTimeout: 5 * time.Second,
		now: func() time.Time { return at },
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() { _ = s.Stop(context.Background()) })

	wantDead := 0
	for i := range n {
		if d := i % 10; d == 3 || d == 5 || d == 7 || i == 11 {
			wantDead++
		}
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(s.m.recordsIn) == n }, time.Minute, 20*time.Millisecond)
	// Lag against the last stable offset is exported per owned partition, and
	// is zero once everything is read.
	mfs, err := reg.Gather()
	require.NoError(t, err)
	lagSeries := 0
	for _, mf := range mfs {
		if mf.GetName() == "outbox_eos_lag_records" {
			for _, m := range mf.GetMetric() {
				lagSeries++
				require.Zero(t, m.GetGauge().GetValue())
			}
		}
	}
	require.Positive(t, lagSeries, "lag series exported")
	require.NoError(t, s.Stop(ctx))
	require.Equal(t, float64(wantDead), testutil.ToFloat64(s.m.deadLettered))
	require.Equal(t, float64(n-wantDead), testutil.ToFloat64(s.m.recordsOut))
	require.GreaterOrEqual(t, testutil.ToFloat64(s.m.txnAborted), 1.0, "the refused output aborted one transaction")

	outRecs, err := k.ReadCommitted(ctx, out)
	require.NoError(t, err)
	require.Len(t, outRecs, n-wantDead, "every good record made it past the poison ones")

	dead, err := k.ReadCommitted(ctx, dlq)
	require.NoError(t, err)
	require.Len(t, dead, wantDead)
	byValue := map[string]*kgo.Record{}
	for _, r := range recs {
		byValue[string(r.Value)] = r
	}
	classes := map[string]int{}
	for _, d := range dead {
		orig := byValue[string(d.Value)]
		require.NotNil(t, orig, "dead letter %q is an input verbatim", d.Value)
		hs := make([]envelope.Header, len(d.Headers))
		for i, h := range d.Headers {
			hs[i] = envelope.Header(h)
		}
		dl := envelope.ParseDeadLetter(hs)
		require.Equal(t, in, dl.OriginTopic)
		require.Equal(t, header(d, envelope.HeaderEventID), header(orig, envelope.HeaderEventID), "original headers kept")
		require.Equal(t, string(orig.Key), string(d.Key))
		require.Equal(t, "poison-"+in, dl.Group)
		require.Equal(t, StageKind, dl.Stage)
		require.Equal(t, "poison-stage", dl.StageName)
		require.Equal(t, 1, dl.Attempt)
		require.True(t, dl.At.Equal(at))
		require.NotEmpty(t, dl.ErrorMessage)
		require.False(t, dl.OriginTimestamp.IsZero())
		// Both conventions are present.
		for _, key := range []string{envelope.HeaderDLTOriginTopic, envelope.HeaderDLTOriginPartition,
			envelope.HeaderDLTOriginOffset, envelope.HeaderDLTErrorClass, envelope.HeaderDLTErrorMessage,
			envelope.HeaderSpringOriginTopic, envelope.HeaderSpringOriginPartition, envelope.HeaderSpringOriginOffset,
			envelope.HeaderSpringOriginTimestamp, envelope.HeaderSpringOriginGroup, envelope.HeaderSpringErrorClass,
			envelope.HeaderSpringErrorMessage} {
			require.NotEmpty(t, header(d, key), "header %s", key)
		}
		classes[dl.ErrorClass]++
	}
	// The origin partition and offset point back at the input record.
	fetched := map[string]bool{}
	inRecs, err := k.ReadCommitted(ctx, in)
	require.NoError(t, err)
	for _, r := range inRecs {
		fetched[fmt.Sprintf("%d/%d/%s", r.Partition, r.Offset, r.Value)] = true
	}
	for _, d := range dead {
		dl := envelope.ParseDeadLetter(toEnvelope(d.Headers))
		require.True(t, fetched[fmt.Sprintf("%d/%d/%s", dl.OriginPartition, dl.OriginOffset, d.Value)],
			"origin %d/%d of %q", dl.OriginPartition, dl.OriginOffset, d.Value)
	}
	require.Equal(t, map[string]int{
		"*errors.errorString": 30, // errPoison
		"*json.SyntaxError":   30,
		"panic":               30,
		"*kerr.Error":         1, // MESSAGE_TOO_LARGE
	}, classes)
}

func toEnvelope(hs []kgo.RecordHeader) []envelope.Header {
	out := make([]envelope.Header, len(hs))
	for i, h := range hs {
		out[i] = envelope.Header(h)
	}
	return out
}
