package deploy_test

import (
	"os/exec"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

const promtoolInstall = "run `bash scripts/check-deploy.sh tools` (Debian's prometheus package: apt-get install -y prometheus)"

// TestPromtoolChecksAndTestsRules runs `promtool check rules` on the rule
// file and `promtool test rules` on its unit tests, which fire each alert
// and keep it quiet on its neighbours.
func TestPromtoolChecksAndTestsRules(t *testing.T) {
	t.Parallel()
	p := tool(t, "promtool", promtoolInstall)
	out, err := exec.Command(p, "check", "rules", "prometheus/alerts.yaml").CombinedOutput()
	require.NoErrorf(t, err, "promtool check rules:\n%s", out)
	m := regexp.MustCompile(`SUCCESS: (\d+) rules found`).FindSubmatch(out)
	require.NotNilf(t, m, "promtool check rules:\n%s", out)
	t.Logf("promtool check rules: %s rules", m[1])

	c := exec.Command(p, "test", "rules", "alerts_test.yaml")
	c.Dir = "prometheus"
	out, err = c.CombinedOutput()
	require.NoErrorf(t, err, "promtool test rules:\n%s", out)
	require.Contains(t, string(out), "SUCCESS")
}

// TestEveryAlertHasATest fails when an alert of alerts.yaml has no case in
// alerts_test.yaml that expects it to fire, and one that expects it quiet.
func TestEveryAlertHasATest(t *testing.T) {
	t.Parallel()
	rf := readRules(t)
	var tf struct {
		Tests []struct {
			Alerts []struct {
				EvalTime  string           `yaml:"eval_time"`
				AlertName string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
			Series []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
		} `yaml:"tests"`
	}
	readYAML(t, "prometheus/alerts_test.yaml", &tf)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.Alerts {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
				// A case whose series are not all among the expected
				// alerts' is also a quiet case for the others.
				if len(tc.Series) > len(a.ExpAlerts) {
					quiet[a.AlertName] = true
				}
			} else {
				quiet[a.AlertName] = true
			}
		}
	}
	n := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			require.Truef(t, fires[r.Alert], "%s: no test expects it to fire", r.Alert)
			require.Truef(t, quiet[r.Alert], "%s: no test expects it quiet", r.Alert)
		}
	}
	t.Logf("%d alerts, each with a firing and a quiet case", n)
}
