// Package pgtest gives each test its own database on a real Postgres server with
// wal_level=logical, from the pgcluster harness. One server is started per test
// binary; tests get separate databases so they run in parallel. Where the machine
// has no Postgres server binaries but a Docker engine, the server is a container
// (internal/testkit/pgcontainer); only tests link that, never the binary.
//
// A test that cannot get Postgres fails with the reason and what to install; it is
// never skipped.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/internal/testkit/pgcontainer"
)

// EnvDatabaseURL names the environment variable that points tests at an existing
// server instead of a throwaway one.
const EnvDatabaseURL = "OUTBOX_TEST_DATABASE_URL"

var (
	once     sync.Once
	shared   *pgcluster.Cluster
	startErr error
	seq      atomic.Int64
)

// Cluster returns the server shared by this test binary, starting it on first use.
func Cluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	c, err := start()
	if err != nil {
		t.Fatalf("pgtest: this test needs a real Postgres: %v", err)
	}
	return c
}

func start() (*pgcluster.Cluster, error) {
	once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared, startErr = Start(ctx, pgcluster.Config{URL: os.Getenv(EnvDatabaseURL)})
	})
	return shared, startErr
}

// Start is pgcluster.Start with the container fallback (pgcontainer.Start) set
// when cfg has none, for a test that needs a server of its own (other
// settings, its own pg_hba.conf) whatever OUTBOX_TEST_DATABASE_URL says. The
// caller stops it.
func Start(ctx context.Context, cfg pgcluster.Config) (*pgcluster.Cluster, error) {
	if cfg.Container == nil {
		cfg.Container = pgcontainer.Start
	}
	return pgcluster.Start(ctx, cfg)
}

// Database creates a database named name on the shared server for code that
// has no testing.TB (TestMain preparing an Example). It is dropped with the
// server at the end of Main, or explicitly by the caller.
func Database(ctx context.Context, name string) (string, error) {
	c, err := start()
	if err != nil {
		return "", fmt.Errorf("pgtest: this test needs a real Postgres: %w", err)
	}
	return c.CreateDatabase(ctx, fmt.Sprintf("%s_%d", name, os.Getpid()))
}

// Main runs the tests and stops the shared server afterwards. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m interface{ Run() int }) int {
	code := m.Run()
	if shared != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = shared.Stop(ctx)
	}
	return code
}

// NewDatabase creates a fresh, empty database for this test, dropped (with its
// replication slots) when the test ends, and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	c := Cluster(t)
	name := fmt.Sprintf("t_%d_%d_%s", os.Getpid(), seq.Add(1), sanitize(t.Name()))
	if len(name) > 60 {
		name = name[:60]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, err := c.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.DropDatabase(ctx, name); err != nil {
			t.Logf("pgtest: %v", err)
		}
	})
	return url
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
