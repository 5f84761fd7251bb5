package pgcluster_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBinaryLinksNoTestCode runs scripts/check-deps.sh, so `go test ./...`
// fails when the binary links testify, testcontainers-go, a Docker client or
// one of our test harnesses. This package sits under the binary's demo and
// bench, and its container fallback was the way those got in.
func TestBinaryLinksNoTestCode(t *testing.T) {
	t.Parallel()
	out, err := checkDeps(t)
	require.NoError(t, err, "%s", out)
	require.Contains(t, out, "link no test code")
}

// TestCheckDepsNamesTheChain: the check fails on a package that links a
// harness and names the import chain that pulls it in.
func TestCheckDepsNamesTheChain(t *testing.T) {
	t.Parallel()
	const leaky = "github.com/outboxrelay/outbox/internal/demo/pgcluster/testdata/leaky"
	out, err := checkDeps(t, "./internal/demo/pgcluster/testdata/leaky")
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	require.Equal(t, 1, exit.ExitCode(), "%s", out)
	require.Contains(t, out, leaky+" links test-only package github.com/outboxrelay/outbox/internal/testkit/pgtest\n  "+
		leaky+" -> github.com/outboxrelay/outbox/internal/testkit/pgtest\n")
	// What the harness pulls in below it is not listed again.
	require.NotContains(t, out, "links test-only package github.com/outboxrelay/outbox/internal/testkit/pgcontainer")
	require.NotContains(t, out, "links test-only package github.com/testcontainers")
	require.NotContains(t, out, "link no test code")
}

func checkDeps(t *testing.T, pkgs ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("check-deps.sh runs `go list`, which is not on PATH: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	require.NoError(t, err)
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "scripts", "check-deps.sh")}, pkgs...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestStagesLinkOnlyRuntime: the pipeline's packages and the runtime plumbing
// under internal/ link neither the on-call tools (internal/ops), nor the demo
// (internal/demo, which holds kfake), nor a test harness (internal/testkit):
// those serve the binary's commands and the tests, never a stage.
func TestStagesLinkOnlyRuntime(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	require.NoError(t, err)
	runtime := []string{"./outbox", "./relay", "./eos/...", "./sink", "./envelope", "./migrations", "./sql",
		"./internal/buildinfo", "./internal/kafkaconn", "./internal/startwait", "./internal/opsserver", "./internal/pgconnect", "./internal/pgschema", "./internal/tracing"}
	cmd := exec.Command("go", append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, runtime...)...)
	cmd.Dir = root
	out, err := cmd.Output()
	require.NoError(t, err, "go list -deps %v", runtime)
	const module = "github.com/outboxrelay/outbox/internal/"
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		for _, group := range []string{"ops", "demo", "testkit"} {
			if strings.HasPrefix(p, module+group+"/") || p == module+group {
				bad = append(bad, p)
			}
		}
		if strings.Contains(p, "kfake") {
			bad = append(bad, p)
		}
	}
	require.Empty(t, bad, "runtime packages link tools, demo or test code")
	require.Contains(t, string(out), "github.com/outboxrelay/outbox/relay\n", "the list covers the stages")
}
