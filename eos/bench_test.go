package eos

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

// BenchmarkThroughput measures end-to-end stage throughput on the embedded
// broker (or OUTBOX_TEST_KAFKA_BROKERS): ~500-byte records consumed,
// transformed and produced, with the offsets, in transactions of 100, 1,000
// and 10,000 records. Each op moves OUTBOX_BENCH_RECORDS records (default
// 100,000); the figure to read is records/s.
func BenchmarkThroughput(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_BENCH_RECORDS")); err == nil && v > 0 {
		n = v
	}
	for _, perTxn := range []int{100, 1_000, 10_000} {
		b.Run(fmt.Sprintf("txn=%d", perTxn), func(b *testing.B) {
			k := kafkatest.New(b)
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				in := k.Topic("bench-in", 6, nil)
				out := k.Topic("bench-out", 6, nil)
				dlq := k.Topic("bench-dlq", 1, nil)
				produceInput(b, k, in, 0, n, 1000, 500)
				s, err := New(Config{
					KafkaOpts:        append(k.Opts(), kgo.MaxBufferedRecords(2*perTxn+1000)),
					Group:            "bench-" + in,
					InputTopics:      []string{in},
					OutputTopic:      out,
					DeadLetterTopic:  dlq,
					TransactionalID:  "bench-" + in,
					Transform:        benchTransform,
					MaxRecordsPerTxn: perTxn,
					Linger:           50 * time.Millisecond,
					Logger:           slog.New(slog.DiscardHandler),
				})
				require.NoError(b, err)
				b.StartTimer()
				start := time.Now()
				require.NoError(b, s.Start(context.Background()))
				for testutil.ToFloat64(s.m.recordsIn) < float64(n) {
					time.Sleep(2 * time.Millisecond)
				}
				total += time.Since(start)
				b.StopTimer()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				require.NoError(b, s.Stop(ctx))
				ends, err := k.Admin().ListEndOffsets(ctx, out)
				require.NoError(b, err)
				var written int64
				ends.Each(func(o kadm.ListedOffset) { written += o.Offset })
				require.GreaterOrEqual(b, written, int64(n), "the outputs are in the topic")
				require.Equal(b, float64(n), testutil.ToFloat64(s.m.recordsOut), "one output per input, committed")
				cancel()
				b.StartTimer()
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "records/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// benchTransform is a light one-to-one transform: same key, value and
// headers, plus one header, as a router or enricher would.
func benchTransform(_ context.Context, r *kgo.Record) ([]*kgo.Record, error) {
	return []*kgo.Record{{
		Key:     r.Key,
		Value:   r.Value,
		Headers: append(r.Headers[:len(r.Headers):len(r.Headers)], kgo.RecordHeader{Key: "stage", Value: []byte("bench")}),
	}}, nil
}
