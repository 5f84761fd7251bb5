package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var units = []string{"outbox-relay@.service", "outbox-transform@.service", "outbox-sink@.service", "outbox-lag@.service"}

// TestSystemdUnits checks each unit with `systemd-analyze verify` (any
// warning fails), its hardening with `systemd-analyze security --offline`,
// the settings the deployment relies on, and that its ExecStart is a
// command of the binary.
func TestSystemdUnits(t *testing.T) {
	t.Parallel()
	sa := tool(t, "systemd-analyze", "apt-get install -y systemd")
	bin := outboxBinary(t)
	dir := t.TempDir()
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		require.NoError(t, err)
		text := string(b)
		for _, want := range []string{
			"EnvironmentFile=/etc/outbox/%i.env", "Restart=on-failure", "KillSignal=SIGTERM", "RestartPreventExitStatus=2",
			"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		} {
			require.Containsf(t, text, "\n"+want+"\n", "%s: no %s", u, want)
		}
		stop := regexp.MustCompile(`\nTimeoutStopSec=(\d+)s\n`).FindStringSubmatch(text)
		require.NotNilf(t, stop, "%s: no TimeoutStopSec", u)
		secs, _ := strconv.Atoi(stop[1])
		// Longer than the stage's own shutdown bound, so SIGKILL never cuts it.
		require.Greaterf(t, secs, map[string]int{"relay": 10, "transform": 10, "sink": 30, "lag": 0}[strings.Split(strings.TrimPrefix(u, "outbox-"), "@")[0]], "%s: TimeoutStopSec", u)

		exec1 := regexp.MustCompile(`\nExecStart=/usr/local/bin/outbox ([^\n]+)\n`).FindStringSubmatch(text)
		require.NotNilf(t, exec1, "%s: ExecStart is not /usr/local/bin/outbox ...", u)
		args := strings.Fields(exec1[1])
		out, err := exec.Command(bin, append(args, "--help")...).CombinedOutput()
		require.NoErrorf(t, err, "%s: `outbox %s --help`: %s", u, exec1[1], out)
		require.NotContainsf(t, string(out), "Available Commands", "%s: `outbox %s` is a group, not a command", u, exec1[1])

		// verify needs ExecStart's binary to exist: point it at the one built.
		require.NoError(t, os.WriteFile(filepath.Join(dir, u), []byte(strings.ReplaceAll(text, "/usr/local/bin/outbox", bin)), 0o644))
	}
	var paths []string
	for _, u := range units {
		paths = append(paths, filepath.Join(dir, u))
	}
	out, err := exec.Command(sa, append([]string{"verify"}, paths...)...).CombinedOutput()
	require.NoErrorf(t, err, "systemd-analyze verify:\n%s", out)
	require.Emptyf(t, strings.TrimSpace(string(out)), "systemd-analyze verify warns")

	for _, p := range paths {
		out, err := exec.Command(sa, "security", "--offline=yes", "--no-pager", p).CombinedOutput()
		require.NoErrorf(t, err, "systemd-analyze security %s:\n%s", p, out)
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
		require.NotNilf(t, m, "systemd-analyze security:\n%s", out)
		level, err := strconv.ParseFloat(string(m[1]), 64)
		require.NoError(t, err)
		require.Lessf(t, level, 2.0, "%s: exposure %s (systemd's OK is below 4, we keep it below 2)", filepath.Base(p), m[1])
		t.Logf("%s: exposure %.1f", filepath.Base(p), level)
	}
}
