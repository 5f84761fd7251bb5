package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/demo/embedkafka"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/internal/testkit/registrytest"
)

// The product rule: every command line in README.md and docs/*.md works as
// written on a clean machine, and a test runs it. TestDocLines is that test.
//
// What counts as a command line (the one convention the docs follow):
//
//   - every line of a ```sh block: a line ending in `\` continues on the next,
//     a heredoc (<<'END') runs to its terminator, and comment-only lines are
//     skipped;
//   - every `$ ` line of a ```console block; the lines after it, up to the
//     next `$ `, are its output as shown;
//   - every ```sql block, as one script, run with psql by a superuser on the
//     document's database (the docs give them to the DBA).
//
// Unlabelled ``` blocks are diagrams, output or synopses and are never run
// (cli.md's synopses, `[--flag ...]` forms). A `$ ` prompt anywhere but in a
// ```console block, or a shell block labelled anything but sh or console,
// fails the test, so the convention cannot drift.
//
// Each document runs in order, one line after another, in its own world: a
// fresh database on the test binary's Postgres, a fresh Kafka (three kfake
// brokers, or kafkatest's brokers when OUTBOX_TEST_KAFKA* names them), and a shell state carried
// from line to line as a user's shell would (an `export` holds for the lines
// after it). A line runs with `bash -c` in the repository root, with the
// built binary first on PATH and these variables set, which the docs use
// instead of placeholders:
//
//	OUTBOX_DATABASE_URL, DATABASE_URL   the document's database, as a superuser
//	OUTBOX_BROKERS                      the document's Kafka
//
// and these substitutions, the only ones (docSubstitutions):
//
//	go run ./cmd/outbox            the binary built once from ./cmd/outbox
//	postgres://ROLE@db/shop        ROLE (password '...', as the doc's DBA SQL
//	                               creates it) on the test server's database shop
//	/tmp/kafka-                    a temporary directory of the test's
//	http://registry:8081           the test binary's schema registry
//	                               (registrytest: Apicurio's Confluent API),
//	                               started only for a document that names it
//
// A one-shot line passes when it exits 0, or when its ```console output shows
// psql's "ERROR:" lines and it exits non-zero printing those lines. A
// long-running line (relay, transform, sink run, ingest, console, lag --watch / --metrics-addr)
// passes when it serves /readyz with 200 within docReadyWithin and then exits
// 0 on SIGTERM; the address is its --metrics-addr, else OUTBOX_METRICS_ADDR is
// set to a free one. Lines that cannot run here, whose documented exit is not
// 0, or whose output the docs promise (the demo's PASS), are in docLineRules,
// the one table of exceptions; an entry that matches no doc line fails the
// test. What a line's doc says is already there (dead letters to replay, a
// stalled group to read) is put there first by fixtures.
//
// Commands quoted inline in prose (`outbox maintain --retention 168h`) are not
// command lines and are not run; a command meant to be typed goes in a block.

// docRegistryURL is how the docs name a schema registry.
const docRegistryURL = "http://registry:8081"

const (
	docOneShotLimit = 3 * time.Minute
	docReadyWithin  = 45 * time.Second
	docStopWithin   = 20 * time.Second
)

// docLineRule is an exception for the doc lines that contain match.
type docLineRule struct {
	file  string // relative to the repository root
	match string // a substring of the line as written
	// skip, when set, is why the line is not run.
	skip string
	// exit is the documented exit status when it is not 0, with why.
	exit    int
	exitWhy string
	// output, when set, must be in what the line prints.
	output string
}

// docLineRules is the one table of doc lines that are not run, that succeed
// with a status other than 0, or whose output is checked.
var docLineRules = []docLineRule{
	{file: "docs/operations.md", match: "outbox lag --group outbox-transform", exit: 3, exitWhy: "the example shows the group ERR(STALL), and lag exits 3 when a group is at or above --fail-on (ERR)", output: "ERR(STALL)"},
	{file: "README.md", match: "make demo", output: "\nPASS: "},
	{file: "README.md", match: "go run ./cmd/outbox demo", output: "\nPASS: "},
	{file: "README.md", match: "make test", skip: "the test command itself: CI runs it, and it runs this test"},
	{file: "README.md", match: "make generate", skip: "rewrites sql/ in the checkout; make test runs `go tool sqlc diff`, which fails whenever make generate would change anything"},
	{file: "README.md", match: "make lint", skip: "make test runs the same go vet ./... and go tool staticcheck ./... as its lint step"},
	{file: "docs/performance.md", match: "outbox bench compare --rounds 2", skip: "the full comparison: about 40 minutes of runs with Debezium on Kafka Connect; TestBenchCompareSmall runs the same command at a tiny scale"},
	{file: "docs/console.md", match: "go run ./cmd/outbox demo", output: "\nPASS: "},
	{file: "docs/console.md", match: "OUTBOX_SCREENSHOTS=1 go test", skip: "the browser test itself, which the test command runs (internal/console); with the variable it rewrites docs/console-*.png in the checkout"},
	{file: "README.md", match: "make bench", skip: "every Go benchmark for 3s each, minutes of CPU; the benchmarks' code compiles and runs in `go vet` and in their packages' tests"},
}

// docLine is one command line of a document.
type docLine struct {
	file string // relative to the repository root
	line int    // where it starts, 1-based
	lang string // sh, console or sql
	text string // as written, continuation lines included
	// output is what a ```console block shows after the command.
	output []string
}

func (l docLine) String() string { return fmt.Sprintf("%s:%d", l.file, l.line) }

var (
	docFenceRe   = regexp.MustCompile("^```([A-Za-z0-9_+-]*)\\s*$")
	docHeredocRe = regexp.MustCompile(`<<-?\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?`)
	// docLongRunningRe finds the commands that run until a signal.
	docLongRunningRe = regexp.MustCompile(`^outbox (relay|transform|sink run|ingest|console)\b|^outbox lag\b.*--(watch|metrics-addr)\b`)
	docMetricsAddrRe = regexp.MustCompile(`--metrics-addr[= ](\S+)`)
	docShopURLRe     = regexp.MustCompile(`postgres://([a-z_][a-z0-9_]*)@db/shop\b`)
)

// docFiles are README.md and docs/*.md, relative to the repository root.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	files := []string{"README.md"}
	more, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	require.NoError(t, err)
	sort.Strings(more)
	for _, f := range more {
		rel, err := filepath.Rel(root, f)
		require.NoError(t, err)
		files = append(files, rel)
	}
	return files
}

// extractDocLines returns the command lines of one document, in order, and
// every place where it breaks the convention.
func extractDocLines(file, body string) (lines []docLine, problems []string) {
	src := strings.Split(body, "\n")
	for i := 0; i < len(src); i++ {
		m := docFenceRe.FindStringSubmatch(src[i])
		if m == nil {
			continue
		}
		lang, open := m[1], i+1
		end := open
		for end < len(src) && strings.TrimSpace(src[end]) != "```" {
			end++
		}
		if end == len(src) {
			problems = append(problems, fmt.Sprintf("%s:%d: unterminated ``` block", file, i+1))
			return lines, problems
		}
		block := src[open:end]
		i = end
		switch lang {
		case "sh":
			lines = append(lines, shLines(file, open, block)...)
		case "console":
			ls, ps := consoleLines(file, open, block)
			lines = append(lines, ls...)
			problems = append(problems, ps...)
		case "sql":
			lines = append(lines, docLine{file: file, line: open + 1, lang: "sql", text: strings.Join(block, "\n")})
		case "bash", "shell", "zsh", "shell-session", "terminal":
			problems = append(problems, fmt.Sprintf("%s:%d: a ```%s block: label commands ```sh, or ```console with `$ ` prompts", file, open, lang))
		default:
			for j, l := range block {
				if strings.HasPrefix(l, "$ ") {
					problems = append(problems, fmt.Sprintf("%s:%d: a `$ ` prompt outside a ```console block (this one is ```%s)", file, open+j+1, lang))
				}
			}
		}
	}
	return lines, problems
}

// docEnvVars are the variables a document's prose must name before its lines
// get them: "With `OUTBOX_DATABASE_URL` ... set".
var docEnvVars = []string{"OUTBOX_DATABASE_URL", "OUTBOX_BROKERS"}

var docEnvMarkerRe = regexp.MustCompile(`^With .*\bset\b`)

// docEnvMarkers returns, for each of docEnvVars, the line of the first prose
// sentence "With `VAR` ... set" in body (0 when there is none).
func docEnvMarkers(body string) map[string]int {
	from := map[string]int{}
	inFence := false
	for i, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !docEnvMarkerRe.MatchString(l) {
			continue
		}
		for _, v := range docEnvVars {
			if from[v] == 0 && strings.Contains(l, "`"+v+"`") {
				from[v] = i + 1
			}
		}
	}
	return from
}

// shLines splits a ```sh block that starts on line open (0-based index of its
// first line) into commands.
func shLines(file string, open int, block []string) []docLine {
	var out []docLine
	for j := 0; j < len(block); j++ {
		trimmed := strings.TrimSpace(block[j])
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		l := docLine{file: file, line: open + j + 1, lang: "sh", text: block[j]}
		for strings.HasSuffix(strings.TrimRight(block[j], " "), `\`) && j+1 < len(block) {
			j++
			l.text += "\n" + block[j]
		}
		if m := docHeredocRe.FindStringSubmatch(l.text); m != nil {
			for j+1 < len(block) {
				j++
				l.text += "\n" + block[j]
				if strings.TrimSpace(block[j]) == m[1] {
					break
				}
			}
		}
		out = append(out, l)
	}
	return out
}

// consoleLines splits a ```console block into its `$ ` commands and their output.
func consoleLines(file string, open int, block []string) (out []docLine, problems []string) {
	for j := 0; j < len(block); j++ {
		l := block[j]
		if strings.HasPrefix(l, "$ ") {
			d := docLine{file: file, line: open + j + 1, lang: "console", text: strings.TrimPrefix(l, "$ ")}
			for strings.HasSuffix(strings.TrimRight(block[j], " "), `\`) && j+1 < len(block) {
				j++
				d.text += "\n" + block[j]
			}
			out = append(out, d)
			continue
		}
		if len(out) == 0 {
			if strings.TrimSpace(l) != "" {
				problems = append(problems, fmt.Sprintf("%s:%d: a ```console block must start with a `$ ` command", file, open+j+1))
			}
			continue
		}
		out[len(out)-1].output = append(out[len(out)-1].output, l)
	}
	return out, problems
}

// TestDocLines runs every command line of README.md and docs/*.md; see the
// comment at the top of this file for what runs, how, and what passes.
func TestDocLines(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)

	byFile := map[string][]docLine{}
	envFrom := map[string]map[string]int{}
	var files, problems []string
	for _, f := range docFiles(t, root) {
		raw, err := os.ReadFile(filepath.Join(root, f))
		require.NoError(t, err)
		lines, ps := extractDocLines(f, string(raw))
		problems = append(problems, ps...)
		envFrom[f] = docEnvMarkers(string(raw))
		if len(lines) > 0 {
			files = append(files, f)
			byFile[f] = lines
		}
	}
	require.Empty(t, problems, "the docs break the command-line convention (see doclines_test.go)")
	require.Contains(t, files, "README.md", "no command line found in README.md: the extraction is broken")

	// The table stays honest: every rule matches a line that is there.
	for _, r := range docLineRules {
		found := false
		for _, l := range byFile[r.file] {
			found = found || strings.Contains(l.text, r.match)
		}
		if !found {
			t.Errorf("docLineRules: no line of %s contains %q any more; remove the rule", r.file, r.match)
		}
	}

	bin := outboxBinary(t)
	for _, f := range files {
		t.Run(strings.NewReplacer("/", "_", ".md", "").Replace(f), func(t *testing.T) {
			w := newDocWorld(t, root, byFile[f], bin)
			w.envFrom = envFrom[f]
			for _, l := range byFile[f] {
				w.run(t, l)
			}
		})
	}
}

// docWorld is what one document's lines run against.
type docWorld struct {
	root, bin string
	state     string // the file the shell state is carried in
	env       map[string]string
	serverURL string // the document's database, as a superuser
	brokers   []string
	envFrom   map[string]int // where the prose names each of docEnvVars
	kafkaDir  string
	dlqSeeded bool
}

func newDocWorld(t *testing.T, root string, lines []docLine, bin string) *docWorld {
	t.Helper()
	w := &docWorld{root: root, bin: bin}
	usesShop := false
	for _, l := range lines {
		usesShop = usesShop || docShopURLRe.MatchString(l.text) || strings.Contains(l.text, "DATABASE shop")
	}
	if usesShop {
		w.serverURL = shopDatabase(t)
	} else {
		w.serverURL = pgtest.NewDatabase(t)
	}
	w.brokers = docKafka(t)
	w.kafkaDir = t.TempDir()
	tmp := demoTmpDir(t)
	w.state = filepath.Join(t.TempDir(), "shell-state")
	require.NoError(t, os.WriteFile(w.state, nil, 0o600))
	w.env = map[string]string{
		"OUTBOX_DATABASE_URL": w.serverURL,
		"DATABASE_URL":        w.serverURL,
		"OUTBOX_BROKERS":      strings.Join(w.brokers, ","),
		"PATH":                filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"TMPDIR":              tmp,
	}
	t.Cleanup(func() { w.stopKafkaScripts(t) })
	return w
}

// docKafka is a document's Kafka: kafkatest's choice when the environment
// names real brokers, else three in-process kfake brokers, so that the docs'
// production settings (deploy/topics.yaml: replication factor 3,
// min.insync.replicas 2) apply as written.
func docKafka(t *testing.T) []string {
	t.Helper()
	if os.Getenv(kafkatest.EnvBrokers) != "" || (os.Getenv(kafkatest.EnvKafka) != "" && os.Getenv(kafkatest.EnvKafka) != "kfake") {
		return kafkatest.New(t).Brokers
	}
	c, err := embedkafka.Start(embedkafka.Config{Brokers: 3})
	require.NoError(t, err, "kfake")
	t.Cleanup(c.Close)
	return c.Brokers()
}

// shopDatabase creates the database the doc's DBA path names (shop), with the
// lock and the role cleanup migrations/dba_test.go uses for the same names.
func shopDatabase(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster := pgtest.Cluster(t)
	admin, err := pgx.Connect(ctx, cluster.URL())
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close(context.Background()) })
	_, err = admin.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, "outbox docs: the DBA path")
	require.NoError(t, err)
	roles := []string{"outbox_owner", "outbox_relay", "order_service", "outbox_sink"}
	var leftover []string
	require.NoError(t, admin.QueryRow(ctx, `SELECT coalesce(array_agg(rolname::text), '{}') FROM pg_roles WHERE rolname = ANY($1)`, roles).Scan(&leftover))
	require.Empty(t, leftover, "roles left on the test server by an interrupted run: DROP ROLE them")
	url, err := cluster.CreateDatabase(ctx, "shop")
	require.NoError(t, err, "database shop left on the test server by an interrupted run? drop it")
	t.Cleanup(func() {
		ctx := context.Background()
		if err := cluster.DropDatabase(ctx, "shop"); err != nil {
			t.Logf("drop database shop: %v", err)
		}
		for _, r := range roles {
			if _, err := admin.Exec(ctx, `DROP ROLE IF EXISTS `+r); err != nil {
				t.Logf("drop role %s: %v", r, err)
			}
		}
	})
	return url
}

// substitute applies docSubstitutions to a line as written.
func (w *docWorld) substitute(t *testing.T, text string) string {
	t.Helper()
	text = strings.ReplaceAll(text, "go run ./cmd/outbox ", "outbox ")
	text = strings.ReplaceAll(text, "/tmp/kafka-", w.kafkaDir+"/kafka-")
	if strings.Contains(text, docRegistryURL) {
		text = strings.ReplaceAll(text, docRegistryURL, registrytest.URL(t))
	}
	return docShopURLRe.ReplaceAllStringFunc(text, func(m string) string {
		role := docShopURLRe.FindStringSubmatch(m)[1]
		u, err := neturl.Parse(w.serverURL)
		require.NoError(t, err)
		u.User = neturl.UserPassword(role, "...")
		u.Path = "/shop"
		return u.String()
	})
}

func (w *docWorld) rule(l docLine) *docLineRule {
	for i, r := range docLineRules {
		if r.file == l.file && strings.Contains(l.text, r.match) {
			return &docLineRules[i]
		}
	}
	return nil
}

// run runs one line and records a failure of it as a failure of the test.
func (w *docWorld) run(t *testing.T, l docLine) {
	t.Helper()
	rule := w.rule(l)
	if rule != nil && rule.skip != "" {
		t.Logf("%s: not run (%s): %s", l, rule.skip, firstLine(l.text))
		return
	}
	failedBefore := t.Failed()
	defer w.fixtures(t, l)()
	text := w.substitute(t, l.text)
	began := time.Now()
	switch {
	case l.lang == "sql":
		w.oneShot(t, l, rule, fmt.Sprintf("psql -X -q -v ON_ERROR_STOP=1 -d %q <<'DOC_SQL'\n%s\nDOC_SQL", w.serverURL, text))
	case docLongRunningRe.MatchString(text) && !strings.Contains(text, "--check"):
		w.longRunning(t, l, text)
	default:
		w.oneShot(t, l, rule, text)
	}
	verdict := "ok"
	if t.Failed() && !failedBefore {
		verdict = "FAILED"
	}
	t.Logf("%s: %s in %s: %s", l, verdict, time.Since(began).Round(10*time.Millisecond), firstLine(l.text))
}

// script wraps a line so the shell state of the lines before it holds, and
// what it exports holds for the lines after it.
func (w *docWorld) script(line string, keep bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "set -a; . %q; set +a\n", w.state)
	if !keep {
		b.WriteString(line + "\n")
		return b.String()
	}
	fmt.Fprintf(&b, "%s\n__rc=$?\nexport -p > %q.new && mv %q.new %q\nexit $__rc\n", line, w.state, w.state, w.state)
	return b.String()
}

func (w *docWorld) command(ctx context.Context, l docLine, script string, env map[string]string) (*exec.Cmd, *syncBuffer) {
	vars := merge(w.env, env)
	for _, v := range docEnvVars {
		if from := w.envFrom[v]; from == 0 || from > l.line {
			delete(vars, v)
		}
	}
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = w.root
	cmd.Env = childEnv(vars)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd, out
}

func (w *docWorld) oneShot(t *testing.T, l docLine, rule *docLineRule, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), docOneShotLimit)
	defer cancel()
	cmd, out := w.command(ctx, l, w.script(text, true), nil)
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s: still running after %s: %s\noutput:\n%s", l, docOneShotLimit, l.text, out.String())
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", l, err)
	}
	var wantErrors []string
	for _, o := range l.output {
		if strings.HasPrefix(o, "ERROR:") {
			wantErrors = append(wantErrors, o)
		}
	}
	want := 0
	if rule != nil {
		want = rule.exit
	}
	switch {
	case len(wantErrors) > 0:
		if code == 0 {
			t.Errorf("%s: the doc shows it failing, but it exited 0: %s\noutput:\n%s", l, l.text, out.String())
		}
		for _, e := range wantErrors {
			if !strings.Contains(out.String(), e) {
				t.Errorf("%s: the doc shows %q, the output lacks it: %s\noutput:\n%s", l, e, l.text, out.String())
			}
		}
	case code != want:
		t.Errorf("%s: exit %d, want %d: %s\noutput:\n%s", l, code, want, l.text, out.String())
	}
	if rule != nil && rule.output != "" && !strings.Contains(out.String(), rule.output) {
		t.Errorf("%s: the output lacks %q: %s\noutput:\n%s", l, rule.output, l.text, out.String())
	}
}

func (w *docWorld) longRunning(t *testing.T, l docLine, text string) {
	t.Helper()
	addr := ""
	env := map[string]string{}
	if m := docMetricsAddrRe.FindStringSubmatch(text); m != nil {
		addr = m[1]
		if strings.HasPrefix(addr, ":") {
			addr = "127.0.0.1" + addr
		}
	} else {
		addr = freeAddr(t)
		env["OUTBOX_METRICS_ADDR"] = addr
	}
	cmd, out := w.command(context.Background(), l, w.script("exec "+text, false), env)
	require.NoError(t, cmd.Start(), "%s: start", l)
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	defer func() {
		select {
		case <-done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()

	deadline := time.Now().Add(docReadyWithin)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-done:
			t.Fatalf("%s: exited (%v) before it was ready: %s\noutput:\n%s", l, waitErr, l.text, out.String())
		default:
		}
		resp, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz on %s not 200 within %s (last: %v): %s\noutput:\n%s", l, addr, docReadyWithin, docStatus(resp, err), l.text, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM))
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("%s: exit after SIGTERM: %v: %s\noutput:\n%s", l, waitErr, l.text, out.String())
		}
	case <-time.After(docStopWithin):
		t.Errorf("%s: still running %s after SIGTERM: %s\noutput:\n%s", l, docStopWithin, l.text, out.String())
	}
}

func docStatus(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// fixtures puts in place what a line's doc says is there before it, and
// returns what undoes it once the line has run: the stalled transform that
// operations.md's `outbox lag --group` example reads, and the dead letters its
// `outbox dlq` lines list, show and replay.
func (w *docWorld) fixtures(t *testing.T, l docLine) (undo func()) {
	t.Helper()
	if strings.HasPrefix(l.text, "outbox lag ") && docFlag(l.text, "--group") != "" {
		return w.stalledGroup(t, l, docFlag(l.text, "--group"))
	}
	if w.dlqSeeded || !strings.HasPrefix(l.text, "outbox dlq ") {
		return func() {}
	}
	w.dlqSeeded = true
	topic := docFlag(l.text, "--topic")
	require.NotEmpty(t, topic, "%s: an outbox dlq line without --topic", l)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	origin := strings.TrimSuffix(topic, ".dlt")
	// Partition 0 and 2, as the doc's `show 0:0` and `--at 2:0,2:1` expect:
	// calls the payment API answered 503 until the sink gave up.
	for i, p := range []int32{0, 2, 2} {
		dl := envelope.DeadLetter{
			OriginTopic: origin, OriginPartition: p, OriginOffset: int64(i),
			Group: "payments-sink", Stage: "sink", StageName: "payment",
			ErrorClass: "http_503", ErrorMessage: "payment API answered 503 Service Unavailable",
			Attempt: 6, At: time.Now(),
			History: []envelope.Attempt{{N: 6, At: time.Now(), Status: 503, Error: "503 Service Unavailable"}},
		}
		key := fmt.Sprintf("order-%d", 41+i)
		r := &kgo.Record{Topic: topic, Partition: p, Key: []byte(key), Value: []byte(`{"order_id":"` + key + `"}`),
			Headers: []kgo.RecordHeader{{Key: "event_id", Value: []byte(fmt.Sprintf("0190f0c0-0000-7000-8000-00000000004%d", i))}}}
		for _, h := range dl.Headers() {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		require.NoError(t, cl.ProduceSync(ctx, r).FirstErr(), "%s: seed a dead letter on %s", l, topic)
	}
	return func() {}
}

// stalledGroup makes group the stage the lag example shows: a live member of
// group on outbox.order whose committed offset does not move while records
// wait behind it (STALL). The returned func makes the member leave.
func (w *docWorld) stalledGroup(t *testing.T, l docLine, group string) func() {
	t.Helper()
	const topic = "outbox.order"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	for i := range 5 {
		r := &kgo.Record{Topic: topic, Partition: 0, Key: []byte(fmt.Sprintf("order-%d", i)), Value: []byte(`{}`)}
		require.NoError(t, cl.ProduceSync(ctx, r).FirstErr(), "%s: produce to %s", l, topic)
	}
	var offsets kadm.Offsets
	offsets.Add(kadm.Offset{Topic: topic, Partition: 0, At: 1, LeaderEpoch: -1})
	committed, err := kadm.NewClient(cl).CommitOffsets(ctx, group, offsets)
	require.NoError(t, err, "%s: commit offsets of %s", l, group)
	require.NoError(t, committed.Error(), "%s: commit offsets of %s", l, group)

	member, err := kgo.NewClient(kgo.SeedBrokers(w.brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit())
	require.NoError(t, err)
	fetches := member.PollFetches(ctx)
	require.NoError(t, fetches.Err(), "%s: the stalled member of %s fetches", l, group)
	require.NotZero(t, fetches.NumRecords(), "%s: the stalled member of %s sees the records behind its offset", l, group)
	return member.Close
}

// docFlag returns the value of flag in a command line, or "".
func docFlag(text, flag string) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Split(bufio.ScanWords)
	for sc.Scan() {
		if sc.Text() == flag && sc.Scan() {
			return sc.Text()
		}
	}
	return ""
}

// stopKafkaScripts stops the brokers testing.md's lines started.
func (w *docWorld) stopKafkaScripts(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(w.kafkaDir, "kafka-*"))
	for _, d := range dirs {
		out, err := exec.Command("bash", filepath.Join(w.root, "scripts", "kafka.sh"), "stop", d).CombinedOutput()
		if err != nil {
			t.Logf("kafka.sh stop %s: %v: %s", d, err, out)
		}
	}
}

// TestExtractDocLines pins the convention: what is a command line, where its
// text ends, what is output, and which blocks break the rule.
func TestExtractDocLines(t *testing.T) {
	t.Parallel()
	doc := strings.Join([]string{
		"# Title",                        // 1
		"```sh",                          // 2
		"# a comment is not a command",   // 3
		"outbox migrate up \\",           // 4
		"    --schema outbox",            // 5
		"",                               // 6
		"psql \"$DATABASE_URL\" <<'SQL'", // 7
		"SELECT 1;",                      // 8
		"SQL",                            // 9
		"```",                            // 10
		"```console",                     // 11
		"$ outbox version",               // 12
		"outbox v1.2.3",                  // 13
		"$ psql -c 'x'",                  // 14
		"ERROR:  syntax error",           // 15
		"```",                            // 16
		"```",                            // 17
		"outbox relay [flags]",           // 18
		"```",                            // 19
		"```sql",                         // 20
		"SELECT 2;",                      // 21
		"```",                            // 22
	}, "\n")
	lines, problems := extractDocLines("x.md", doc)
	require.Empty(t, problems)
	require.Len(t, lines, 5)
	require.Equal(t, docLine{file: "x.md", line: 4, lang: "sh", text: "outbox migrate up \\\n    --schema outbox"}, lines[0])
	require.Equal(t, docLine{file: "x.md", line: 7, lang: "sh", text: "psql \"$DATABASE_URL\" <<'SQL'\nSELECT 1;\nSQL"}, lines[1])
	require.Equal(t, docLine{file: "x.md", line: 12, lang: "console", text: "outbox version", output: []string{"outbox v1.2.3"}}, lines[2])
	require.Equal(t, docLine{file: "x.md", line: 14, lang: "console", text: "psql -c 'x'", output: []string{"ERROR:  syntax error"}}, lines[3])
	require.Equal(t, docLine{file: "x.md", line: 21, lang: "sql", text: "SELECT 2;"}, lines[4])

	for _, bad := range []string{
		"```\n$ outbox lag\nGROUP ...\n```\n",               // a prompt outside ```console
		"```bash\noutbox version\n```\n",                    // another shell label
		"```console\noutput first\n$ outbox version\n```\n", // output before a command
		"```sh\noutbox version\n",                           // unterminated
	} {
		_, problems := extractDocLines("bad.md", bad)
		require.NotEmpty(t, problems, "%q passes the convention check", bad)
	}

	require.Equal(t, map[string]int{"OUTBOX_BROKERS": 4},
		docEnvMarkers("```sh\nWith `OUTBOX_DATABASE_URL` set inside a block\n```\nWith `OUTBOX_BROKERS` set:\n"),
		"only prose names the variables, and from its line on")
}
