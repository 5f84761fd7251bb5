package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// The tools the checks run. helm comes from scripts/check-deploy.sh, which
// builds the pinned version once into ~/.cache/outbox/bin; promtool and
// systemd-analyze are Debian's.
const kubeVersion = "1.31.0"

// tool returns the path of a command on PATH, failing the test with how to
// get it when it is missing.
func tool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	require.NoErrorf(t, err, "%s is not installed: %s", name, install)
	return p
}

var helmOnce struct {
	sync.Once
	path string
	err  error
	out  string
}

// helm returns the pinned helm binary, installing it through
// scripts/check-deploy.sh the first time.
func helm(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		var stderr bytes.Buffer
		c := exec.Command("bash", "../scripts/check-deploy.sh", "helm-path")
		c.Stderr = &stderr
		out, err := c.Output()
		helmOnce.path, helmOnce.err, helmOnce.out = strings.TrimSpace(string(out)), err, stderr.String()
	})
	require.NoErrorf(t, helmOnce.err, "scripts/check-deploy.sh helm-path: %s", helmOnce.out)
	require.FileExists(t, helmOnce.path)
	return helmOnce.path
}

var binOnce struct {
	sync.Once
	dir string
	err error
	out []byte
}

// outboxBinary builds cmd/outbox once per test binary.
func outboxBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binOnce.dir, binOnce.err = os.MkdirTemp("", "outbox-deploy-test-")
		if binOnce.err != nil {
			return
		}
		c := exec.Command("go", "build", "-o", filepath.Join(binOnce.dir, "outbox"), "../cmd/outbox")
		binOnce.out, binOnce.err = c.CombinedOutput()
	})
	require.NoErrorf(t, binOnce.err, "go build ./cmd/outbox: %s", binOnce.out)
	return filepath.Join(binOnce.dir, "outbox")
}

// TestMain removes the built binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if binOnce.dir != "" {
		_ = os.RemoveAll(binOnce.dir)
	}
	os.Exit(code)
}

// readYAML decodes the fields of file that v names.
func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(false)
	require.NoErrorf(t, dec.Decode(v), "%s", file)
}
