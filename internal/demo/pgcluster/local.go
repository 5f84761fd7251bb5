package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// localServer is a postmaster run as a child process from the machine's binaries.
type localServer struct {
	binDir   string
	dir      string // owns data/, socket and log; removed on stop when temp
	temp     bool
	port     int
	settings map[string]string
	cred     *syscall.Credential // set when we are root and run as postgres
	logger   *slog.Logger

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func findBinDir(explicit string) (string, error) {
	var tried []string
	check := func(dir string) bool {
		if dir == "" {
			return false
		}
		tried = append(tried, dir)
		for _, b := range []string{"initdb", "postgres", "pg_ctl"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if explicit != "" {
		if check(explicit) {
			return explicit, nil
		}
		return "", fmt.Errorf("initdb, postgres and pg_ctl not all found in %s", explicit)
	}
	if check(os.Getenv("OUTBOX_PG_BIN")) {
		return os.Getenv("OUTBOX_PG_BIN"), nil
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && check(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if check(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	for _, pattern := range []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql@*/bin", "/usr/local/opt/postgresql@*/bin"} {
		dirs, _ := filepath.Glob(pattern)
		sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
		for _, d := range dirs {
			if check(d) {
				return d, nil
			}
		}
	}
	return "", fmt.Errorf("no initdb/postgres/pg_ctl in OUTBOX_PG_BIN, PATH or %v", append(tried, "/usr/lib/postgresql/*/bin"))
}

func versionOf(dir string) int {
	for _, part := range strings.FieldsFunc(dir, func(r rune) bool { return r < '0' || r > '9' }) {
		if n, err := strconv.Atoi(part); err == nil {
			return n
		}
	}
	return 0
}

// runAs returns the credential to run the server with: initdb and postgres refuse
// to run as root, so a root process runs them as the `postgres` OS user.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: running as root needs a `postgres` OS user to run the server as (Debian's postgresql package creates it; or `useradd --system postgres`): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func startLocal(ctx context.Context, binDir, dataDir string, port int, settings map[string]string, hba []string, logger *slog.Logger) (*localServer, error) {
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	s := &localServer{binDir: binDir, settings: settings, cred: cred, logger: logger}
	if dataDir == "" {
		dir, err := os.MkdirTemp("", "outbox-pg-")
		if err != nil {
			return nil, fmt.Errorf("pgcluster: temp dir: %w", err)
		}
		s.dir, s.temp = dir, true
	} else {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("pgcluster: data dir: %w", err)
		}
		s.dir = dataDir
	}
	if err := s.chown(s.dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(s.dir, "data", "PG_VERSION")); err != nil {
		if err := s.initdb(ctx); err != nil {
			s.cleanup()
			return nil, err
		}
	}
	if len(hba) > 0 {
		if err := s.writeHBA(hba); err != nil {
			s.cleanup()
			return nil, err
		}
	}
	s.port = port
	if s.port == 0 {
		// A kept data dir keeps its port so URLs printed by the demo stay valid.
		if b, err := os.ReadFile(filepath.Join(s.dir, "port")); err == nil {
			s.port, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	if s.port == 0 || !portFree(s.port) {
		if s.port, err = freePort(); err != nil {
			s.cleanup()
			return nil, err
		}
	}
	if err := s.startOnPort(ctx, port != 0); err != nil {
		s.cleanup()
		return nil, err
	}
	logger.Info("pgcluster: started local postgres", slog.String("bin", binDir), slog.String("dir", s.dir), slog.Int("port", s.port))
	return s, nil
}

// startOnPort starts the server on s.port. Another process may take a free port
// between our probe and the bind, so a chosen (not configured) port gets a few
// tries on other free ports.
func (s *localServer) startOnPort(ctx context.Context, configured bool) error {
	for attempt := 1; ; attempt++ {
		_ = os.WriteFile(filepath.Join(s.dir, "port"), []byte(strconv.Itoa(s.port)), 0o644)
		err := s.start(ctx)
		if err == nil {
			return nil
		}
		if configured || attempt == 3 || ctx.Err() != nil {
			return err
		}
		if s.port, err = freePort(); err != nil {
			return err
		}
	}
}

func (s *localServer) chown(path string) error {
	if s.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
		return fmt.Errorf("pgcluster: chown %s to postgres: %w", path, err)
	}
	return nil
}

func (s *localServer) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true}
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C", "TZ=UTC")
	cmd.Dir = s.dir
	return cmd
}

func (s *localServer) initdb(ctx context.Context) error {
	cmd := s.command(ctx, "initdb", "-D", filepath.Join(s.dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: initdb in %s: %w: %s", s.dir, err, out.String())
	}
	return nil
}

// harnessHBA are the pg_hba.conf lines a custom file starts with: the harness
// itself (ping, CreateDatabase, DropDatabase) connects as postgres without a
// password over 127.0.0.1, and tests may over the socket.
var harnessHBA = []string{
	"local all         postgres              trust",
	"host  all         postgres 127.0.0.1/32 trust",
	"local replication postgres              trust",
	"host  replication postgres 127.0.0.1/32 trust",
}

// writeHBA replaces the cluster's pg_hba.conf with the harness's lines and then
// the caller's.
func (s *localServer) writeHBA(lines []string) error {
	var b strings.Builder
	b.WriteString("# written by pgcluster (Config.HBA)\n")
	for _, l := range append(append([]string{}, harnessHBA...), lines...) {
		b.WriteString(l + "\n")
	}
	path := filepath.Join(s.dir, "data", "pg_hba.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("pgcluster: write %s: %w", path, err)
	}
	return s.chown(path)
}

func (s *localServer) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	args := []string{"-D", filepath.Join(s.dir, "data"), "-p", strconv.Itoa(s.port), "-k", s.dir, "-c", "listen_addresses=127.0.0.1"}
	keys := make([]string, 0, len(s.settings))
	for k := range s.settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+s.settings[k])
	}
	logPath := filepath.Join(s.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgcluster: open server log: %w", err)
	}
	// The postmaster must outlive the ctx that started it, so no CommandContext here.
	cmd := s.command(context.Background(), "postgres", args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If this process dies (a SIGKILLed test), take the server down with it.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := ping(ctx, s.url()); err == nil {
			return nil
		}
		select {
		case <-done:
			tail, _ := os.ReadFile(logPath)
			return fmt.Errorf("pgcluster: postgres exited during start: %s", lastLines(string(tail), 15))
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: wait for postgres: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tail, _ := os.ReadFile(logPath)
			return fmt.Errorf("pgcluster: postgres not ready after 60s: %s", lastLines(string(tail), 15))
		}
	}
}

// stop signals the postmaster with the pg_ctl shutdown mode's signal and waits.
func (s *localServer) stop(ctx context.Context, mode string, remove bool) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd != nil {
		sig := syscall.SIGINT
		switch mode {
		case "smart":
			sig = syscall.SIGTERM
		case "immediate":
			sig = syscall.SIGQUIT
		}
		_ = cmd.Process.Signal(sig)
		select {
		case <-done:
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	if remove {
		s.cleanup()
	}
	return nil
}

// kill SIGKILLs the postmaster's process group (the postmaster and every
// backend, as a host failure would) and waits, bounded, until none of them is
// left, so the port and data directory are free when it returns.
func (s *localServer) kill() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	// The postmaster leads its own group (Setpgid) and its children inherit it.
	pgid := cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("pgcluster: kill postgres (pid %d): %w", pgid, err)
	}
	const bound = 10 * time.Second
	select {
	case <-done:
	case <-time.After(bound):
		return fmt.Errorf("pgcluster: postgres (pid %d) still running %s after SIGKILL", pgid, bound)
	}
	// The orphaned backends are reparented, and nobody may reap them: a zombie
	// holds no port or file, so only a live one counts.
	deadline := time.Now().Add(bound)
	for {
		left := liveInGroup(pgid)
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgcluster: %d postgres processes of group %d still running %s after SIGKILL", left, pgid, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// liveInGroup counts the processes in group pgid that are not zombies, from /proc.
func liveInGroup(pgid int) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	n := 0
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // gone since the glob
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			n++
		}
	}
	return n
}

func (s *localServer) cleanup() {
	if s.temp {
		_ = os.RemoveAll(s.dir)
	}
}

func (s *localServer) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *localServer) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
