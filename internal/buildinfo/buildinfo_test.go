package buildinfo

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollectorExportsTheBuild(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector())
	in := Get()
	want := `# HELP outbox_build_info The running outbox build; always 1.
# TYPE outbox_build_info gauge
outbox_build_info{go_version="` + in.GoVersion + `",revision="` + in.Revision + `",version="` + in.Version + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "outbox_build_info"); err != nil {
		t.Fatal(err)
	}
}

func TestVersionFromLinker(t *testing.T) {
	old := Version
	defer func() { Version = old }()
	Version = "v9.9.9"
	if got := Get(); got.Version != "v9.9.9" || !strings.HasPrefix(got.String(), "v9.9.9 (rev ") {
		t.Fatalf("Get() = %+v, %q", got, got.String())
	}
}
