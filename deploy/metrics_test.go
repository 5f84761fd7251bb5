package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"gopkg.in/yaml.v3"

	"github.com/outboxrelay/outbox/eos"
	"github.com/outboxrelay/outbox/ingest"
	"github.com/outboxrelay/outbox/internal/buildinfo"
	"github.com/outboxrelay/outbox/internal/ops/lagcheck"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/sink"
)

// catalog maps each metric family the binary exports to its label names
// (constant and variable).
type catalog map[string][]string

// describer is a prometheus.Registerer that keeps what each collector
// describes instead of serving it.
type describer struct{ cat catalog }

var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*constLabels: \{(.*)\}, variableLabels: \{(.*)\}\}$`)

func (d *describer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		m := descRE.FindStringSubmatch(desc.String())
		if m == nil {
			return errors.New("unparsed desc: " + desc.String())
		}
		var labels []string
		for _, kv := range strings.Split(m[2], ",") {
			if k, _, ok := strings.Cut(kv, "="); ok {
				labels = append(labels, k)
			}
		}
		for _, l := range strings.Split(m[3], ",") {
			if l != "" {
				labels = append(labels, strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"))
			}
		}
		d.cat[m[1]] = labels
	}
	return nil
}

func (d *describer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := d.Register(c); err != nil {
			panic(err)
		}
	}
}

func (d *describer) Unregister(prometheus.Collector) bool { return false }

// exported builds every stage with a describer as its Registerer (New
// connects to nothing) and returns what they export.
func exported(t *testing.T) catalog {
	t.Helper()
	d := &describer{cat: catalog{}}
	kopts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
	url := "postgres://outbox@127.0.0.1:1/outbox"

	_, err := relay.New(relay.Config{DatabaseURL: url, KafkaOpts: kopts, Slot: "outbox_relay", Registerer: d})
	require.NoError(t, err, "relay.New")
	_, err = eos.New(eos.Config{KafkaOpts: kopts, Group: "g", InputTopics: []string{"in"}, OutputTopic: "out",
		DeadLetterTopic: "dlq", TransactionalID: "g-0", Registerer: d,
		Transform: func(context.Context, *kgo.Record) ([]*kgo.Record, error) { return nil, nil }})
	require.NoError(t, err, "eos.New")
	build, err := sink.NewTemplateRequest(sink.RequestTemplate{Method: http.MethodPost, URL: "http://127.0.0.1:1/{{.AggregateID}}"})
	require.NoError(t, err)
	_, err = sink.New(sink.Config{DatabaseURL: url, KafkaOpts: kopts, Group: "g", Registerer: d,
		Endpoints: []sink.Endpoint{{Name: "payment", Topics: []string{"commands.payment"}, Request: build}}})
	require.NoError(t, err, "sink.New")
	pool, err := pgxpool.New(context.Background(), url) // connects lazily: never here
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = ingest.New(ingest.Config{Pool: pool, Registerer: d,
		Sources: []ingest.Source{{Name: "github", Preset: ingest.PresetGitHub, Secrets: [][]byte{[]byte("s")}}}})
	require.NoError(t, err, "ingest.New")
	_, err = lagcheck.NewMetrics(d)
	require.NoError(t, err, "lagcheck.NewMetrics")
	require.NoError(t, d.Register(buildinfo.Collector()))

	// The families each stage owns must all be there, or the checks below
	// would pass on an empty catalogue.
	for _, prefix := range []string{"outbox_relay_", "outbox_eos_", "outbox_sink_", "outbox_ingest_", "outbox_consumer_", "outbox_build_info"} {
		found := false
		for name := range d.cat {
			found = found || strings.HasPrefix(name, prefix)
		}
		require.Truef(t, found, "no metric %s* registered", prefix)
	}
	return d.cat
}

// targetLabels are the labels Prometheus itself attaches to every series.
var targetLabels = []string{"job", "instance", "namespace", "pod", "service", "container"}

var (
	metricRE  = regexp.MustCompile(`\b(outbox_[a-z0-9_]+|outbox:[a-z0-9_:]+|up)\b(\{[^}]*\})?`)
	matcherRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	byRE      = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	legendRE  = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

// checkExpr fails when expr names a metric the code does not export, or a
// label that none of the metrics it reads carries. recorded maps recording
// rule names to their labels. It returns the labels expr's series may carry.
func checkExpr(t *testing.T, cat, recorded catalog, where, expr string) []string {
	t.Helper()
	labels := slices.Clone(targetLabels)
	found := false
	for _, m := range metricRE.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		if name == "up" {
			found = true
			continue
		}
		own, ok := cat[name]
		if !ok {
			own, ok = recorded[name]
		}
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, cut := strings.CutSuffix(name, suffix); cut {
					if own, ok = cat[base]; ok {
						if suffix == "_bucket" {
							own = append(slices.Clone(own), "le")
						}
						break
					}
				}
			}
		}
		if !assertf(t, ok, "%s: metric %s is not exported by the code (expr %q)", where, name, expr) {
			continue
		}
		found = true
		for _, mm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			assertf(t, slices.Contains(own, mm[1]) || slices.Contains(targetLabels, mm[1]),
				"%s: %s has no label %q (it has %v)", where, name, mm[1], own)
		}
		labels = append(labels, own...)
	}
	require.Truef(t, found, "%s: no outbox metric in %q", where, expr)
	for _, m := range byRE.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[1], ",") {
			l = strings.TrimSpace(l)
			assertf(t, l == "" || slices.Contains(labels, l), "%s: grouping by %q, which no metric of %q has", where, l, expr)
		}
	}
	return labels
}

func assertf(t *testing.T, ok bool, format string, args ...any) bool {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
	return ok
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile("prometheus/alerts.yaml")
	require.NoError(t, err)
	var rf ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&rf), "prometheus/alerts.yaml")
	return rf
}

// TestAlertRulesReadExportedMetrics checks every rule's metrics and labels
// against the code, and that each alert has what on-call needs: for,
// severity, a summary and a description naming a command to run.
func TestAlertRulesReadExportedMetrics(t *testing.T) {
	t.Parallel()
	cat := exported(t)
	rf := readRules(t)
	recorded := catalog{}
	alerts := 0
	stages := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := "alerts.yaml " + g.Name + "/" + r.Alert + r.Record
			labels := checkExpr(t, cat, recorded, where, r.Expr)
			if r.Record != "" {
				var by []string
				if m := byRE.FindAllStringSubmatch(r.Expr, -1); len(m) > 0 {
					for _, l := range strings.Split(m[len(m)-1][1], ",") {
						by = append(by, strings.TrimSpace(l))
					}
				} else {
					by = labels
				}
				recorded[r.Record] = by
				continue
			}
			alerts++
			stages[g.Name] = true
			assertf(t, r.For != "", "%s: no for:", where)
			assertf(t, slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]), "%s: severity %q", where, r.Labels["severity"])
			assertf(t, r.Annotations["summary"] != "", "%s: no summary", where)
			assertf(t, strings.Contains(r.Annotations["description"], "`outbox ") || strings.Contains(r.Annotations["description"], "`systemctl "),
				"%s: the description names no command to look with", where)
		}
	}
	for _, g := range []string{"outbox-relay", "outbox-eos", "outbox-sink", "outbox-ingest"} {
		require.Truef(t, stages[g], "no alerts for %s", g)
	}
	t.Logf("%d alert rules, %d recording rules over %d exported metric families", alerts, len(recorded), len(cat))
}

type dashboard struct {
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// TestDashboardReadsExportedMetrics checks that every panel of the Grafana
// dashboard queries metrics and labels the code exports, through the
// ${DS_PROMETHEUS} variable, and that there is a row per stage.
func TestDashboardReadsExportedMetrics(t *testing.T) {
	t.Parallel()
	cat := exported(t)
	b, err := os.ReadFile("grafana/outbox.json")
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d))
	require.GreaterOrEqual(t, d.SchemaVersion, 36)
	require.LessOrEqual(t, d.SchemaVersion, 41)
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" {
			var q struct {
				Query string `json:"query"`
			}
			require.NoError(t, json.Unmarshal(v.Query, &q))
			checkExpr(t, cat, nil, "variable "+v.Name, q.Query)
		}
	}
	require.Equal(t, "datasource", vars["DS_PROMETHEUS"], "the dashboard's datasource variable")

	var rows []string
	ids := map[int]bool{}
	queries := 0
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			require.Falsef(t, ids[p.ID], "panel id %d used twice", p.ID)
			ids[p.ID] = true
			require.LessOrEqualf(t, p.GridPos.X+p.GridPos.W, 24, "panel %q is wider than the grid", p.Title)
			if p.Type == "row" {
				rows = append(rows, p.Title)
				walk(p.Panels)
				continue
			}
			require.NotNilf(t, p.Datasource, "panel %q has no datasource", p.Title)
			require.Equalf(t, "${DS_PROMETHEUS}", p.Datasource.UID, "panel %q datasource", p.Title)
			require.NotEmptyf(t, p.Targets, "panel %q has no query", p.Title)
			for _, tg := range p.Targets {
				where := "panel " + p.Title
				labels := checkExpr(t, cat, nil, where, tg.Expr)
				for _, m := range legendRE.FindAllStringSubmatch(tg.LegendFormat, -1) {
					assertf(t, slices.Contains(labels, m[1]), "%s: legend {{%s}} is a label none of its metrics has", where, m[1])
				}
				for _, m := range regexp.MustCompile(`\$([a-z_]+)`).FindAllStringSubmatch(tg.Expr, -1) {
					assertf(t, m[1] == "__rate_interval" || vars[m[1]] != "", "%s: $%s is not a dashboard variable", where, m[1])
				}
				queries++
			}
		}
	}
	walk(d.Panels)
	for _, stage := range []string{"Relay", "EOS", "Sink", "Ingest"} {
		require.Truef(t, slices.ContainsFunc(rows, func(r string) bool { return strings.HasPrefix(r, stage) }), "no %s row in %v", stage, rows)
	}
	// Every family the stages export appears on the dashboard, except the
	// ones named here, with the reason.
	unshown := map[string]string{
		"outbox_consumer_lag_records":      "per partition: the group panels show the sums; `outbox lag` the partitions",
		"outbox_consumer_lag_seconds":      "per partition, as above",
		"outbox_consumer_partition_status": "per partition, as above",
	}
	var missing []string
	for name := range cat {
		if _, ok := unshown[name]; !ok && !strings.Contains(string(b), name) {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	require.Empty(t, missing, "metric families the dashboard does not show")
	t.Logf("%d panels in %d rows, %d queries", len(ids)-len(rows), len(rows), queries)
}
