package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/schema"
)

// schemaCmd is `outbox schema check`: the CI step that fails on a breaking
// schema change before it reaches a topic.
func schemaCmd(e *env) *cobra.Command {
	return groupCmd(e, "schema", "event schemas: fail CI on a breaking change (check), register them for the wire format (register)", schemaCheckCmd(e), schemaRegisterCmd(e))
}

func schemaCheckCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "check",
		Short: "check schema versions for breaking changes in a registry's compatibility mode; exit 1 on a break",
		Long: `Checks event schemas for breaking changes, in Confluent Schema Registry's
compatibility modes and rule names. Without --against or --old/--new it checks
the folder's own history: every vN against the versions before it. With
--against REF (a git revision) it checks what changed since REF: each added
version against the earlier ones, and that no published version was edited or
removed. With --against URL the registry decides, in the mode it has
configured for each subject (the event type). --old FILE --new FILE checks one
pair. Exit 0: compatible; 1: a breaking change, each named with its field and
rule; 2: usage.`,
		Args: noArgs,
	}
	fs := c.Flags()
	var (
		dir     = fs.String("dir", "schemas", "the schemas folder: <event_type>/v<N>.avsc and v<N>.json")
		against = fs.String("against", "", "a git revision (main, HEAD~1, origin/main) or a registry URL (http://host:8081) to check against")
		oldFile = fs.String("old", "", "with --new: the earlier schema file (.avsc or .json)")
		newFile = fs.String("new", "", "with --old: the later schema file")
		mode    = fs.String("mode", "", "BACKWARD (default), FORWARD, FULL, BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE, FULL_TRANSITIVE or NONE; with a registry URL the registry's configured mode applies")
		timeout = fs.Duration("timeout", 30*time.Second, "with a registry URL: per-request timeout")
	)
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		registry := strings.HasPrefix(*against, "http://") || strings.HasPrefix(*against, "https://")
		switch {
		case (*oldFile == "") != (*newFile == ""):
			return fmt.Errorf("%w: --old and --new go together", errUsage)
		case *oldFile != "" && *against != "":
			return fmt.Errorf("%w: --old/--new and --against exclude each other", errUsage)
		case registry && *mode != "":
			return fmt.Errorf("%w: --mode with a registry URL: the registry checks in the mode it has configured for each subject", errUsage)
		}
		m, err := schema.ParseMode(*mode)
		if err != nil {
			return fmt.Errorf("%w: --mode: %v", errUsage, err)
		}
		var res *schema.Result
		switch {
		case *oldFile != "":
			res, err = checkPair(m, *oldFile, *newFile)
		case registry:
			res, err = checkRegistry(ctx, *dir, *against, *timeout)
		case *against != "":
			res, err = checkGit(ctx, m, *dir, *against)
		default:
			res, err = checkFolder(m, *dir)
		}
		if err != nil {
			return err
		}
		return reportSchemaCheck(e, m, res)
	}
	return c
}

// reportSchemaCheck prints a check's result: each breaking change on its
// own line, then a summary; a break is exit 1.
func reportSchemaCheck(e *env, m schema.Mode, res *schema.Result) error {
	for _, v := range res.Violations {
		fmt.Fprintf(e.stdout, "BREAKING: %s\n", v)
	}
	if n := len(res.NotChecked); n > 0 {
		fmt.Fprintf(e.stderr, "outbox schema check: %d JSON Schema version(s) not checked here (%s): no Go library decides JSON Schema compatibility; check them with --against <registry URL>\n",
			n, strings.Join(res.NotChecked, ", "))
	}
	if n := len(res.Violations); n > 0 {
		return exitError{code: 1, msg: fmt.Sprintf("%d breaking change(s) in mode %s", n, m)}
	}
	fmt.Fprintf(e.stdout, "ok: %d version(s) compatible in mode %s\n", len(res.Checked), m)
	return nil
}

// loadFolder loads the schemas folder; a folder that breaks the layout is a
// failure of the check (exit 1), not a usage error.
func loadFolder(dir string) (*schema.Set, error) {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: --dir %s: not a folder", errUsage, dir)
	}
	return schema.Load(os.DirFS(dir))
}

func checkFolder(m schema.Mode, dir string) (*schema.Result, error) {
	s, err := loadFolder(dir)
	if err != nil {
		return nil, err
	}
	return schema.CheckHistory(m, s)
}

func checkPair(m schema.Mode, oldFile, newFile string) (*schema.Result, error) {
	var vs [2]*schema.Version
	for i, f := range []string{oldFile, newFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		if vs[i], err = schema.Parse(filepath.Base(f), b); err != nil {
			return nil, err
		}
	}
	if vs[0].Format != vs[1].Format {
		return nil, fmt.Errorf("%w: --old is %s and --new is %s: compare one format", errUsage, vs[0].Format, vs[1].Format)
	}
	if vs[1].Format == schema.FormatJSON && m != schema.None {
		return nil, fmt.Errorf("%w: JSON Schema compatibility is not decided here (no Go library implements it): check JSON Schema with --against <registry URL>", errUsage)
	}
	vs[0].EventType, vs[1].EventType = oldFile, newFile
	vs[1].Number = 2
	res := &schema.Result{}
	viol, err := schema.Check(m, schema.History{vs[0]}, vs[1])
	if err != nil {
		return nil, err
	}
	res.Checked = []string{newFile}
	res.Violations = viol
	return res, nil
}

func checkRegistry(ctx context.Context, dir, url string, timeout time.Duration) (*schema.Result, error) {
	s, err := loadFolder(dir)
	if err != nil {
		return nil, err
	}
	r := schema.Registry{URL: url, Client: &http.Client{Timeout: timeout}}
	return r.CheckRegistry(ctx, s)
}

// checkGit checks the folder against itself at revision rev, read with
// `git ls-tree` and `git show rev:path` from the repository the folder is in.
func checkGit(ctx context.Context, m schema.Mode, dir, rev string) (*schema.Result, error) {
	cur, err := loadFolder(dir)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := git(ctx, abs, "rev-parse", "--verify", "--quiet", rev+"^{commit}"); err != nil {
		return nil, fmt.Errorf("%w: --against %s: not a git revision of the repository holding %s", errUsage, rev, dir)
	}
	// Paths below run from the folder itself, so "." is the folder at rev.
	list, err := git(ctx, abs, "ls-tree", "-r", "-z", "--name-only", rev, "--", ".")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, p := range strings.Split(string(list), "\x00") {
		if p == "" {
			continue
		}
		b, err := git(ctx, abs, "show", rev+":./"+p)
		if err != nil {
			return nil, err
		}
		files[filepath.ToSlash(p)] = b
	}
	old, err := schema.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("the schemas folder at %s: %w", rev, err)
	}
	return schema.CheckChanges(m, old, cur)
}

// git runs a git command in dir and returns its output.
func git(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return nil, fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}
