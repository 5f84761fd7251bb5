package apachekafka_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/demo/apachekafka"
)

func script(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	p, err := apachekafka.Script()
	require.NoError(t, err)
	cmd := exec.Command("bash", append([]string{p}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestScriptStartIsIdempotentAndStopIsPerDir runs scripts/kafka.sh as the
// docs show it: start prints the bootstrap list on its last line, a second
// start on the running DIR prints the same list, stop stops that DIR's JVM
// only, and a stopped DIR starts again on the same addresses with its data.
func TestScriptStartIsIdempotentAndStopIsPerDir(t *testing.T) {
	t.Parallel()
	a, b := t.TempDir(), t.TempDir()
	outA, errA, err := script(t, nil, "start", a)
	require.NoError(t, err, errA)
	outB, errB, err := script(t, nil, "start", b, "--transaction-version", "1")
	require.NoError(t, err, errB)
	t.Cleanup(func() {
		_, _, _ = script(t, nil, "stop", a)
		_, _, _ = script(t, nil, "stop", b)
	})
	listA := lastLine(outA)
	require.Regexp(t, `^127\.0\.0\.1:\d+$`, listA)

	again, _, err := script(t, nil, "start", a)
	require.NoError(t, err)
	require.Equal(t, listA, lastLine(again), "start on a running DIR prints the same list")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(listA))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	_, err = adm.CreateTopic(ctx, 1, 1, nil, "kept")
	require.NoError(t, err)
	// Auto-creation is off, as in production: a test relying on it fails.
	res := cl.ProduceSync(ctx, &kgo.Record{Topic: "never-created", Value: []byte("x")})
	require.Error(t, res.FirstErr())

	_, _, err = script(t, nil, "stop", a)
	require.NoError(t, err)
	st, _, err := script(t, nil, "status", b)
	require.NoError(t, err)
	require.Contains(t, st, "node 1: running", "stopping DIR a left DIR b's broker alone")
	require.Contains(t, st, "transaction.version=1")
	st, _, err = script(t, nil, "status", a)
	require.NoError(t, err)
	require.Contains(t, st, "node 1: stopped")

	again, errA, err = script(t, nil, "start", a)
	require.NoError(t, err, errA)
	require.Equal(t, listA, lastLine(again), "a restarted DIR keeps its address")
	topics, err := adm.ListTopics(ctx, "kept")
	require.NoError(t, err)
	require.NoError(t, topics["kept"].Err, "a restarted DIR keeps its data")
	require.Equal(t, lastLine(outB), lastLine(mustStatus(t, b)))
}

func mustStatus(t *testing.T, dir string) string {
	out, _, err := script(t, nil, "status", dir)
	require.NoError(t, err)
	return out
}

// TestScriptSaysWhatToInstall: without Java the script stops at once with one
// line naming the package, instead of a stack of shell errors.
func TestScriptSaysWhatToInstall(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	// A PATH with the shell tools but no java.
	for _, tool := range []string{"bash", "sed", "dirname", "cat", "mkdir"} {
		p, err := exec.LookPath(tool)
		require.NoError(t, err)
		require.NoError(t, os.Symlink(p, filepath.Join(bin, tool)))
	}
	_, errOut, err := script(t, []string{"PATH=" + bin}, "start", t.TempDir())
	require.Error(t, err)
	require.Contains(t, errOut, "Java 17 or newer is not installed: apt-get install -y openjdk-17-jre-headless")
	require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut), "\n")+1, "one line: %q", errOut)
}

// TestThreeNodesBounce starts three nodes with SASL_SSL and checks what the
// bounce tests rely on: every node registers, a killed node leaves the
// cluster serving (RF 3, min.insync.replicas 2), and it rejoins on restart.
func TestThreeNodesBounce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := apachekafka.Start(ctx, apachekafka.Config{Brokers: 3, TLSSASL: true, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Stop()) })
	require.Len(t, c.Brokers, 3)
	require.Len(t, c.Plaintext, 3)
	require.NotEqual(t, c.Brokers, c.Plaintext)

	opts, err := c.SecureOpts()
	require.NoError(t, err)
	cl, err := kgo.NewClient(append(opts, kgo.RecordRetries(20))...)
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, 3, -1, nil, "bounce")
	require.NoError(t, err)
	require.NoError(t, resp.Err)
	td, err := adm.ListTopics(ctx, "bounce")
	require.NoError(t, err)
	for _, p := range td["bounce"].Partitions {
		require.Len(t, p.Replicas, 3, "replication factor 3 on three nodes")
	}
	rc, err := adm.DescribeTopicConfigs(ctx, "bounce")
	require.NoError(t, err)
	isr, err := rc.On("bounce", nil)
	require.NoError(t, err)
	for _, kv := range isr.Configs {
		if kv.Key == "min.insync.replicas" {
			require.Equal(t, "2", kv.MaybeValue())
		}
	}

	require.NoError(t, c.Kill(2))
	for i := range 20 {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "bounce", Value: []byte{byte(i)}}).FirstErr(), "produce with node 2 down")
	}
	require.NoError(t, c.StartNode(2))
	require.NoError(t, c.WaitReady(ctx))
}

// TestDocsTestingCommandsRun runs every line of the "Running a broker
// yourself" block of docs/testing.md as written (its /tmp folders moved into
// the test's temp folder), so a doc line that does not work fails the tests.
func TestDocsTestingCommandsRun(t *testing.T) {
	t.Parallel()
	p, err := apachekafka.Script()
	require.NoError(t, err)
	root := filepath.Dir(filepath.Dir(p))
	doc, err := os.ReadFile(filepath.Join(root, "docs", "testing.md"))
	require.NoError(t, err)
	_, block, ok := strings.Cut(string(doc), "## Running a broker yourself\n\n```sh\n")
	require.True(t, ok, "docs/testing.md lost its block of commands")
	block, _, _ = strings.Cut(block, "```")
	tmp := t.TempDir()
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		cmdline, _, _ := strings.Cut(line, "#")
		cmdline = strings.ReplaceAll(strings.TrimSpace(cmdline), "/tmp/", tmp+"/")
		if f := strings.Fields(cmdline); len(f) > 3 && f[2] == "start" {
			dir := f[3]
			dirs = append(dirs, dir)
			t.Cleanup(func() { _, _, _ = script(t, nil, "stop", dir) })
		}
		cmd := exec.Command("bash", "-c", cmdline)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s:\n%s", cmdline, out)
	}
	require.Len(t, dirs, 3, "the block starts three clusters")
	env, err := os.ReadFile(filepath.Join(dirs[2], "client.env"))
	require.NoError(t, err)
	require.Contains(t, string(env), "OUTBOX_KAFKA_SASL_MECHANISM=SCRAM-SHA-512")
	st := mustStatus(t, dirs[1])
	require.Contains(t, st, "node 2: stopped", "the block's node kill took effect")
	require.Contains(t, st, "transaction.version=1")
}
