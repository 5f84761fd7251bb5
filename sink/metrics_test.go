package sink

import (
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testOpts reach no broker: for tests of New alone.
var testOpts = []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}

func testutilValue(s *Sink, resolution string) float64 {
	return testutil.ToFloat64(s.metrics.unknown.WithLabelValues("api", resolution))
}
