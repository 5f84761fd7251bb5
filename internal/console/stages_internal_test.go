package console

import (
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// TestInstanceViewRates reads two expositions of a transform and an ingest
// handler 10s apart: rates are the counters' increase per second, a counter
// that went down (a restart) counts from zero, a series new since the first
// scrape counts whole, and the first scrape has no rates.
func TestInstanceViewRates(t *testing.T) {
	t.Parallel()
	parse := func(text string) map[string]*dto.MetricFamily {
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(text))
		require.NoError(t, err)
		return fams
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	first := parse(`# TYPE outbox_eos_records_in_total counter
outbox_eos_records_in_total{stage="orders"} 100
# TYPE outbox_eos_records_out_total counter
outbox_eos_records_out_total{stage="orders"} 200
# TYPE outbox_eos_records_dead_lettered_total counter
outbox_eos_records_dead_lettered_total{stage="orders"} 7
# TYPE outbox_eos_lag_records gauge
outbox_eos_lag_records{stage="orders",topic="t",partition="0"} 3
outbox_eos_lag_records{stage="orders",topic="t",partition="1"} 4
# TYPE outbox_ingest_webhooks_total counter
outbox_ingest_webhooks_total{source="psp",outcome="accepted"} 10
`)
	second := parse(`# TYPE outbox_eos_records_in_total counter
outbox_eos_records_in_total{stage="orders"} 150
# TYPE outbox_eos_records_out_total counter
outbox_eos_records_out_total{stage="orders"} 20
# TYPE outbox_eos_records_dead_lettered_total counter
outbox_eos_records_dead_lettered_total{stage="orders"} 9
# TYPE outbox_eos_lag_records gauge
outbox_eos_lag_records{stage="orders",topic="t",partition="0"} 5
# TYPE outbox_ingest_webhooks_total counter
outbox_ingest_webhooks_total{source="psp",outcome="accepted"} 30
outbox_ingest_webhooks_total{source="psp",outcome="duplicate"} 5
`)
	a := counterSample{at: t0, values: counterValues(first)}
	b := counterSample{at: t0.Add(10 * time.Second), values: counterValues(second)}

	v := instanceView("http://x/metrics", first, a, counterSample{})
	require.Equal(t, []string{KindTransform, KindIngest}, v.Kinds)
	require.Zero(t, v.RateSeconds)
	require.Len(t, v.Transforms, 1)
	require.Nil(t, v.Transforms[0].In.PerSecond, "no rate on the first scrape")
	require.Equal(t, 100.0, v.Transforms[0].In.Total)
	require.Equal(t, 7.0, v.Transforms[0].LagRecords, "lag summed over partitions")

	v = instanceView("http://x/metrics", second, b, a)
	require.Equal(t, 10.0, v.RateSeconds)
	tm := v.Transforms[0]
	require.Equal(t, "orders", tm.Stage)
	require.InDelta(t, 5.0, *tm.In.PerSecond, 1e-9)
	require.InDelta(t, 2.0, *tm.Out.PerSecond, 1e-9, "reset: 20 since the restart")
	require.InDelta(t, 12.0, *tm.DeadLetters.PerMinute, 1e-9, "2 in 10s")
	require.Equal(t, 5.0, tm.LagRecords)
	require.NotNil(t, tm.Aborted.PerSecond)
	require.Zero(t, *tm.Aborted.PerSecond, "a family the process does not export counts zero")
	require.Len(t, v.IngestSources, 1)
	require.Equal(t, "psp", v.IngestSources[0].Source)
	got := map[string]float64{}
	for _, w := range v.IngestSources[0].Webhooks {
		got[w.Outcome] = *w.PerSecond
	}
	require.Equal(t, map[string]float64{"accepted": 2, "duplicate": 0.5}, got, "a new series counts whole")
}

// TestNormalizeMetricsURL: host:port and a bare base URL mean /metrics.
func TestNormalizeMetricsURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"127.0.0.1:9090":                 "http://127.0.0.1:9090/metrics",
		"http://relay:9090/":             "http://relay:9090/metrics",
		"https://sink.example/x/metrics": "https://sink.example/x/metrics",
	} {
		got, err := normalizeMetricsURL(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "ftp://x/metrics", "http:///metrics"} {
		_, err := normalizeMetricsURL(in)
		require.Error(t, err, in)
	}
}
