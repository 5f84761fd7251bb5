package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/outboxrelay/outbox/sink"
)

// Why the console scrapes the stages: the database and the cluster say what
// the pipeline holds (slots, lag, ledger rows, dead letters), but only a
// stage process knows its breaker state, whether it streams or waits as a
// standby, and how fast it works. Those figures are its Prometheus metrics,
// so the console reads the same /metrics that Prometheus does and shows them
// per instance, with rates from the counters' deltas between two samples.

// Stage kinds, from the metric families a process exports.
const (
	KindRelay     = "relay"     // outbox_relay_*
	KindTransform = "transform" // outbox_eos_*
	KindSink      = "sink"      // outbox_sink_*
	KindIngest    = "ingest"    // outbox_ingest_*
)

// kindPrefixes maps a metric name prefix to the stage kind that exports it.
var kindPrefixes = []struct{ prefix, kind string }{
	{"outbox_relay_", KindRelay},
	{"outbox_eos_", KindTransform},
	{"outbox_sink_", KindSink},
	{"outbox_ingest_", KindIngest},
}

// Relay roles, from outbox_relay_active.
const (
	RoleActive  = "active"  // holds the slot and streams
	RoleStandby = "standby" // waits for the slot (or restarts)
)

// Breaker states, from outbox_sink_breaker_state (0, 1, 2).
var breakerStates = []string{"closed", "half-open", "open"}

// maxScrapeBytes bounds one /metrics body.
const maxScrapeBytes = 16 << 20

// StageInstance is one stage process as its /metrics shows it.
type StageInstance struct {
	// URL is the scraped /metrics URL.
	URL string `json:"url"`
	// Kinds are what the process is (relay, transform, sink, ingest), from
	// the metric families it exports; empty when it exports none of them.
	Kinds []string `json:"kinds"`
	// Error is why the scrape failed (the instance did not answer, or not
	// with metrics); the other fields are then empty.
	Error string `json:"error,omitempty"`
	// RateSeconds is the time since the previous scrape of this instance,
	// over which the rates are computed; 0 on the first scrape, when every
	// rate is null.
	RateSeconds float64 `json:"rate_seconds"`
	// Relays are the relay's slots (one per process in practice).
	Relays []RelayMetrics `json:"relays,omitempty"`
	// Transforms are the eos stages the process runs.
	Transforms []TransformMetrics `json:"transforms,omitempty"`
	// SinkEndpoints are the sink's endpoints.
	SinkEndpoints []SinkEndpointMetrics `json:"sink_endpoints,omitempty"`
	// IngestSources are the webhook sources the ingest handler has seen.
	IngestSources []IngestMetrics `json:"ingest_sources,omitempty"`
}

// CounterRate is a counter's total and its rate since the previous scrape.
type CounterRate struct {
	// Total is the counter's value.
	Total float64 `json:"total"`
	// PerSecond is the increase per second since the previous scrape (a
	// counter that went down was reset by a restart: its value is the
	// increase); null on the first scrape.
	PerSecond *float64 `json:"per_second"`
	// PerMinute is PerSecond times 60.
	PerMinute *float64 `json:"per_minute"`
}

// OutcomeRate is a counter of one outcome (a sink call's, a webhook's).
type OutcomeRate struct {
	Outcome string `json:"outcome"`
	CounterRate
}

// RelayMetrics is one relay slot as the relay reports it.
type RelayMetrics struct {
	Slot string `json:"slot"`
	// Role is RoleActive while the relay holds the slot and streams
	// (outbox_relay_active 1), else RoleStandby.
	Role string `json:"role"`
	// Events and Transactions are the relayed outbox rows and Postgres
	// transactions committed to Kafka.
	Events       CounterRate `json:"events"`
	Transactions CounterRate `json:"transactions"`
	// RetainedWALBytes is outbox_relay_slot_retained_wal_bytes.
	RetainedWALBytes float64 `json:"retained_wal_bytes"`
	// LagBytes is outbox_relay_lag_bytes: WAL end minus the confirmed LSN.
	LagBytes float64 `json:"lag_bytes"`
	// SessionRestarts counts sessions that failed and restarted.
	SessionRestarts float64 `json:"session_restarts"`
}

// TransformMetrics is one eos stage (outbox_eos_*{stage}).
type TransformMetrics struct {
	Stage string `json:"stage"`
	// In and Out are records consumed and produced in committed transactions.
	In  CounterRate `json:"records_in"`
	Out CounterRate `json:"records_out"`
	// DeadLetters are input records sent to the dead-letter topic.
	DeadLetters CounterRate `json:"dead_letters"`
	// Aborted are transactions aborted.
	Aborted CounterRate `json:"transactions_aborted"`
	// LagRecords is outbox_eos_lag_records summed over the owned partitions.
	LagRecords float64 `json:"lag_records"`
}

// SinkEndpointMetrics is one sink endpoint (outbox_sink_*{endpoint}).
type SinkEndpointMetrics struct {
	Endpoint string `json:"endpoint"`
	// Breaker is the circuit breaker: closed, half-open or open.
	Breaker string `json:"breaker"`
	// BreakerState is outbox_sink_breaker_state as exported (0, 1, 2).
	BreakerState float64 `json:"breaker_state"`
	// Calls are the external calls per outcome (succeeded, retriable, permanent).
	Calls []OutcomeRate `json:"calls"`
	// Retries are the retries scheduled after failed calls.
	Retries CounterRate `json:"retries"`
	// RetriesWaiting is the endpoint's ledger rows in status retrying, as the
	// sink last counted them (outbox_sink_ledger_rows); null until it has.
	RetriesWaiting *float64 `json:"retries_waiting"`
	// DeadLetters are the records the endpoint dead-lettered, all classes.
	DeadLetters CounterRate `json:"dead_letters"`
}

// IngestMetrics is one webhook source of the ingest handler.
type IngestMetrics struct {
	Source   string        `json:"source"`
	Webhooks []OutcomeRate `json:"webhooks"`
}

// Standby reports whether the relay waits for its slot (the page marks it).
func (r RelayMetrics) Standby() bool { return r.Role == RoleStandby }

// stageScraper scrapes Config.StageMetrics. Only the sampler's goroutine
// calls scrape, so prev needs no lock.
type stageScraper struct {
	urls    []string
	timeout time.Duration
	client  *http.Client
	prev    map[string]counterSample // by URL
}

// counterSample is one scrape's counters, for the next scrape's rates.
type counterSample struct {
	at     time.Time
	values map[string]float64 // by series key
}

func newStageScraper(cfg *Config) *stageScraper {
	return &stageScraper{urls: cfg.StageMetrics, timeout: cfg.StageTimeout,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}},
		prev:   map[string]counterSample{}}
}

func (s *stageScraper) close() { s.client.CloseIdleConnections() }

// scrape reads every instance in parallel, each within the timeout, and
// returns them in Config order.
func (s *stageScraper) scrape(ctx context.Context) []StageInstance {
	if len(s.urls) == 0 {
		return nil
	}
	type result struct {
		fams map[string]*dto.MetricFamily
		at   time.Time
		err  error
	}
	results := make([]result, len(s.urls))
	var wg sync.WaitGroup
	for i, u := range s.urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].fams, results[i].err = s.fetch(ctx, u)
			results[i].at = time.Now()
		}()
	}
	wg.Wait()
	out := make([]StageInstance, len(s.urls))
	for i, u := range s.urls {
		r := results[i]
		if r.err != nil {
			out[i] = StageInstance{URL: u, Kinds: []string{}, Error: r.err.Error()}
			delete(s.prev, u) // a restarted process starts its counters anew
			continue
		}
		cur := counterSample{at: r.at, values: counterValues(r.fams)}
		prev := s.prev[u] // the zero counterSample on the first scrape: no rates
		s.prev[u] = cur
		out[i] = instanceView(u, r.fams, cur, prev)
	}
	return out
}

// fetch GETs one /metrics URL and decodes it.
func (s *stageScraper) fetch(ctx context.Context, u string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("console: scrape %s: %w", u, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error // names the URL again: say it once
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("console: scrape %s: no answer within %s: %w", u, s.timeout, err)
		}
		return nil, fmt.Errorf("console: scrape %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("console: scrape %s: %s", u, resp.Status)
	}
	format := expfmt.ResponseFormat(resp.Header)
	if format.FormatType() == expfmt.TypeUnknown {
		format = expfmt.NewFormat(expfmt.TypeTextPlain)
	}
	dec := expfmt.NewDecoder(io.LimitReader(resp.Body, maxScrapeBytes), format)
	fams := map[string]*dto.MetricFamily{}
	for {
		f := &dto.MetricFamily{}
		err := dec.Decode(f)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("console: scrape %s: decode metrics: %w", u, err)
		}
		fams[f.GetName()] = f
	}
	return fams, nil
}

// seriesKey names one series: its family and its labels, sorted.
func seriesKey(name string, m *dto.Metric) string {
	var b strings.Builder
	b.WriteString(name)
	lps := append([]*dto.LabelPair(nil), m.GetLabel()...)
	sort.Slice(lps, func(i, j int) bool { return lps[i].GetName() < lps[j].GetName() })
	for _, lp := range lps {
		b.WriteString("|")
		b.WriteString(lp.GetName())
		b.WriteString("=")
		b.WriteString(strconv.Quote(lp.GetValue()))
	}
	return b.String()
}

// counterValues are every counter series of the scrape, by series key.
func counterValues(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for name, f := range fams {
		if f.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, m := range f.GetMetric() {
			out[seriesKey(name, m)] = m.GetCounter().GetValue()
		}
	}
	return out
}

// value is a counter's, gauge's or untyped metric's value.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// rates turns one scrape's counters into CounterRates against the previous.
type rates struct{ cur, prev counterSample }

// of sums the family's series whose labels match (all given name=value
// pairs) and rates the sum.
// A family the process does not export (a labelled counter with no series
// yet) counts zero.
func (r rates) of(fams map[string]*dto.MetricFamily, name string, match ...string) CounterRate {
	var total, inc float64
	havePrev := r.prev.values != nil && r.cur.at.After(r.prev.at)
	for _, m := range fams[name].GetMetric() {
		if !matches(m, match) {
			continue
		}
		v := value(m)
		total += v
		if havePrev {
			p, seen := r.prev.values[seriesKey(name, m)]
			switch {
			case !seen: // a new series started at 0 since the previous scrape
				inc += v
			case v >= p:
				inc += v - p
			default: // reset
				inc += v
			}
		}
	}
	cr := CounterRate{Total: total}
	if havePrev {
		ps := inc / r.cur.at.Sub(r.prev.at).Seconds()
		pm := ps * 60
		cr.PerSecond, cr.PerMinute = &ps, &pm
	}
	return cr
}

func matches(m *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if label(m, match[i]) != match[i+1] {
			return false
		}
	}
	return true
}

// labelValues are the distinct values of a label over the family's series, sorted.
func labelValues(fams map[string]*dto.MetricFamily, name, lbl string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range fams[name].GetMetric() {
		v := label(m, lbl)
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// gauge is the sum of the family's matching series, and whether any matched.
func gauge(fams map[string]*dto.MetricFamily, name string, match ...string) (float64, bool) {
	var sum float64
	found := false
	for _, m := range fams[name].GetMetric() {
		if matches(m, match) {
			sum += value(m)
			found = true
		}
	}
	return sum, found
}

// instanceView reads one instance's families.
func instanceView(u string, fams map[string]*dto.MetricFamily, cur, prev counterSample) StageInstance {
	v := StageInstance{URL: u, Kinds: []string{}}
	if prev.values != nil && cur.at.After(prev.at) {
		v.RateSeconds = cur.at.Sub(prev.at).Seconds()
	}
	for _, kp := range kindPrefixes {
		for name := range fams {
			if strings.HasPrefix(name, kp.prefix) {
				v.Kinds = append(v.Kinds, kp.kind)
				break
			}
		}
	}
	r := rates{cur: cur, prev: prev}

	// Relay: every series carries the slot as a constant label.
	for _, slot := range labelValues(fams, "outbox_relay_active", "slot") {
		active, _ := gauge(fams, "outbox_relay_active", "slot", slot)
		rm := RelayMetrics{Slot: slot, Role: RoleStandby,
			Events:       r.of(fams, "outbox_relay_events_total", "slot", slot),
			Transactions: r.of(fams, "outbox_relay_transactions_total", "slot", slot),
		}
		if active >= 1 {
			rm.Role = RoleActive
		}
		rm.RetainedWALBytes, _ = gauge(fams, "outbox_relay_slot_retained_wal_bytes", "slot", slot)
		rm.LagBytes, _ = gauge(fams, "outbox_relay_lag_bytes", "slot", slot)
		rm.SessionRestarts, _ = gauge(fams, "outbox_relay_session_restarts_total", "slot", slot)
		v.Relays = append(v.Relays, rm)
	}

	// Transform: every series carries the stage name.
	for _, st := range labelValues(fams, "outbox_eos_records_in_total", "stage") {
		tm := TransformMetrics{Stage: st,
			In:          r.of(fams, "outbox_eos_records_in_total", "stage", st),
			Out:         r.of(fams, "outbox_eos_records_out_total", "stage", st),
			DeadLetters: r.of(fams, "outbox_eos_records_dead_lettered_total", "stage", st),
			Aborted:     r.of(fams, "outbox_eos_transactions_aborted_total", "stage", st),
		}
		tm.LagRecords, _ = gauge(fams, "outbox_eos_lag_records", "stage", st)
		v.Transforms = append(v.Transforms, tm)
	}

	// Sink: the breaker gauge is set for every configured endpoint at
	// start, so its labels are the endpoints this process serves (the
	// ledger gauge covers every endpoint of the database).
	for _, ep := range labelValues(fams, "outbox_sink_breaker_state", "endpoint") {
		state, _ := gauge(fams, "outbox_sink_breaker_state", "endpoint", ep)
		sm := SinkEndpointMetrics{Endpoint: ep, BreakerState: state, Breaker: fmt.Sprintf("unknown (%g)", state),
			Calls:       []OutcomeRate{},
			Retries:     r.of(fams, "outbox_sink_retries_total", "endpoint", ep),
			DeadLetters: r.of(fams, "outbox_sink_dead_letters_total", "endpoint", ep),
		}
		if i := int(state); float64(i) == state && i >= 0 && i < len(breakerStates) {
			sm.Breaker = breakerStates[i]
		}
		for _, m := range fams["outbox_sink_calls_total"].GetMetric() {
			if label(m, "endpoint") != ep {
				continue
			}
			o := label(m, "outcome")
			sm.Calls = append(sm.Calls, OutcomeRate{Outcome: o, CounterRate: r.of(fams, "outbox_sink_calls_total", "endpoint", ep, "outcome", o)})
		}
		sort.Slice(sm.Calls, func(i, j int) bool { return sm.Calls[i].Outcome < sm.Calls[j].Outcome })
		if w, ok := gauge(fams, "outbox_sink_ledger_rows", "endpoint", ep, "status", sink.StatusRetrying); ok {
			sm.RetriesWaiting = &w
		} else if _, counted := fams["outbox_sink_ledger_rows"]; counted {
			zero := 0.0 // counted, and no row retrying
			sm.RetriesWaiting = &zero
		}
		v.SinkEndpoints = append(v.SinkEndpoints, sm)
	}

	// Ingest: per source and outcome.
	for _, src := range labelValues(fams, "outbox_ingest_webhooks_total", "source") {
		im := IngestMetrics{Source: src, Webhooks: []OutcomeRate{}}
		for _, m := range fams["outbox_ingest_webhooks_total"].GetMetric() {
			if label(m, "source") != src {
				continue
			}
			o := label(m, "outcome")
			im.Webhooks = append(im.Webhooks, OutcomeRate{Outcome: o, CounterRate: r.of(fams, "outbox_ingest_webhooks_total", "source", src, "outcome", o)})
		}
		sort.Slice(im.Webhooks, func(i, j int) bool { return im.Webhooks[i].Outcome < im.Webhooks[j].Outcome })
		v.IngestSources = append(v.IngestSources, im)
	}
	return v
}

// normalizeMetricsURL turns a --stage-metrics value into the URL scraped:
// "host:port" and "http://host:port" mean http://host:port/metrics.
func normalizeMetricsURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty URL")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q: want an http or https URL", s)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%q: no host", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/metrics"
	}
	return u.String(), nil
}
