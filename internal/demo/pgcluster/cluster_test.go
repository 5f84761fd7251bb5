package pgcluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
)

const childEnv = "OUTBOX_PGCLUSTER_CHILD"

// TestMain lets the test binary act as a child process that starts a cluster
// as whatever user it runs as.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := startAndQuery(context.Background()); err != nil {
			os.Stderr.WriteString("child: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("child ok uid=" + strconv.Itoa(os.Geteuid()) + "\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startAndQuery(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{DisableContainer: true})
	if err != nil {
		return err
	}
	defer c.Stop(context.Background()) //nolint:errcheck
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var wal string
	if err := conn.QueryRow(ctx, `SHOW wal_level`).Scan(&wal); err != nil {
		return err
	}
	if wal != "logical" {
		return &os.PathError{Op: "wal_level", Path: wal, Err: os.ErrInvalid}
	}
	return nil
}

// TestRunsAsThisUser starts a cluster as the test process's user. As root the
// server runs as the `postgres` OS user (initdb and postgres refuse root).
func TestRunsAsThisUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Config{DisableContainer: true})
	require.NoError(t, err)
	defer c.Stop(ctx) //nolint:errcheck
	require.Equal(t, pgcluster.SourceLocal, c.Source())
	require.NoError(t, startAndQueryURL(ctx, c.URL()))

	// The postmaster runs as a non-root user in every case.
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.PID()), "status"))
	require.NoError(t, err)
	require.NotContains(t, string(st), "Uid:\t0\t", "postgres must not run as root")

	url, err := c.CreateDatabase(ctx, "made_here")
	require.NoError(t, err)
	require.NoError(t, startAndQueryURL(ctx, url))
	require.NoError(t, c.DropDatabase(ctx, "made_here"))
}

func startAndQueryURL(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// TestRunsAsNormalUser re-executes this test binary as an unprivileged user
// (when the tests run as root), so the harness's non-root path is exercised on
// the same machine; run as a normal user, TestRunsAsThisUser already is that path.
func TestRunsAsNormalUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		require.NoError(t, startAndQuery(context.Background()), "non-root start")
		return
	}
	u, err := user.Lookup("postgres")
	require.NoError(t, err, "root test runs need a `postgres` OS user (apt-get install -y postgresql creates it)")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	// The go test binary sits in a root-only temp dir; copy it where the user can run it.
	self, err := os.Executable()
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "pgcluster-child-")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	require.NoError(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "child.test")
	src, err := os.Open(self)
	require.NoError(t, err)
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	src.Close()
	require.NoError(t, dst.Close())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A parallel test's fork may still hold the copy's write descriptor for
	// a moment (golang/go#22315): exec then fails with ETXTBSY.
	var out []byte
	for range 50 {
		cmd := exec.CommandContext(ctx, bin)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), childEnv+"=1", "HOME="+dir, "TMPDIR=/tmp")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		out, err = cmd.CombinedOutput()
		if !errors.Is(err, syscall.ETXTBSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "child ok uid="+u.Uid)
}

func TestRestartImmediate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Config{DisableContainer: true})
	require.NoError(t, err)
	defer c.Stop(ctx) //nolint:errcheck
	before := c.PID()
	require.NoError(t, c.Restart(ctx, "immediate"))
	require.NotEqual(t, before, c.PID())
	require.NoError(t, startAndQueryURL(ctx, c.URL()))
}

func TestNoPostgresSaysWhatToInstall(t *testing.T) {
	t.Parallel()
	_, err := pgcluster.Start(context.Background(), pgcluster.Config{BinDir: "/nonexistent", DisableContainer: true})
	require.ErrorIs(t, err, pgcluster.ErrNoPostgres)
	require.Contains(t, err.Error(), "apt-get install -y postgresql")
}

func TestWrongURL(t *testing.T) {
	t.Parallel()
	_, err := pgcluster.Start(context.Background(), pgcluster.Config{URL: "postgres://nobody@127.0.0.1:1/x?connect_timeout=1"})
	require.ErrorContains(t, err, "connect to postgres://nobody@127.0.0.1:1/x")
}

// TestHBA: Config.HBA's lines decide who gets in; the harness's own trust for
// postgres stays, so CreateDatabase works.
func TestHBA(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Config{DisableContainer: true, HBA: []string{"host all app 127.0.0.1/32 scram-sha-256"}})
	require.NoError(t, err)
	defer c.Stop(ctx) //nolint:errcheck
	db, err := c.CreateDatabase(ctx, "hba")
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, db)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE ROLE app LOGIN PASSWORD 'app-pw'; CREATE ROLE other LOGIN PASSWORD 'other-pw'`)
	require.NoError(t, err)

	u, err := url.Parse(db)
	require.NoError(t, err)
	as := func(user, pw string) error {
		v := *u
		v.User = url.UserPassword(user, pw)
		return startAndQueryURL(ctx, v.String())
	}
	require.NoError(t, as("app", "app-pw"))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, as("app", "wrong"), &pgErr)
	require.Equal(t, "28P01", pgErr.Code, "scram-sha-256, not trust")
	require.ErrorAs(t, as("other", "other-pw"), &pgErr)
	require.Equal(t, "28000", pgErr.Code)
	require.Contains(t, pgErr.Message, "no pg_hba.conf entry")

	_, err = pgcluster.Start(ctx, pgcluster.Config{URL: c.URL(), HBA: []string{"host all all 127.0.0.1/32 trust"}})
	require.ErrorContains(t, err, "Config.HBA needs a server this package starts")
}

// TestContainerFallback: with no local binaries Start calls Config.Container
// with the settings and HBA lines, and Stop calls what it returned. The
// "container" here is a local cluster: the plumbing is under test, not Docker.
func TestContainerFallback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	backing, err := pgcluster.Start(ctx, pgcluster.Config{DisableContainer: true})
	require.NoError(t, err)
	defer backing.Stop(ctx) //nolint:errcheck

	var got pgcluster.Spec
	stopped := false
	c, err := pgcluster.Start(ctx, pgcluster.Config{
		BinDir: "/nonexistent", HBA: []string{"host all app all scram-sha-256"}, Settings: map[string]string{"work_mem": "8MB"},
		Container: func(_ context.Context, spec pgcluster.Spec) (string, func(context.Context) error, error) {
			got = spec
			return backing.URL(), func(context.Context) error { stopped = true; return nil }, nil
		},
	})
	require.NoError(t, err)
	require.Equal(t, pgcluster.SourceContainer, c.Source())
	require.Equal(t, "logical", got.Settings["wal_level"], "defaults included")
	require.Equal(t, "8MB", got.Settings["work_mem"])
	require.Equal(t, []string{"host all app all scram-sha-256"}, got.HBA)
	require.NoError(t, startAndQueryURL(ctx, c.URL()))
	require.NoError(t, c.Stop(ctx))
	require.True(t, stopped)

	noEngine := func(context.Context, pgcluster.Spec) (string, func(context.Context) error, error) {
		return "", nil, fmt.Errorf("%w: docker.sock: connection refused", pgcluster.ErrNoEngine)
	}
	_, err = pgcluster.Start(ctx, pgcluster.Config{BinDir: "/nonexistent", Container: noEngine})
	require.ErrorIs(t, err, pgcluster.ErrNoPostgres)
	require.ErrorContains(t, err, "or start a Docker engine")

	_, err = pgcluster.Start(ctx, pgcluster.Config{BinDir: "/nonexistent", Container: noEngine, DisableContainer: true})
	require.ErrorIs(t, err, pgcluster.ErrNoPostgres)
	require.NotContains(t, err.Error(), "Docker")
}
