package outbox_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
)

func TestMain(m *testing.M) {
	// Goroutines alive before the tests are not theirs to stop.
	before := goleak.IgnoreCurrent()
	if err := prepareExampleDatabase(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := pgtest.Main(m)
	if benchCluster != nil {
		_ = benchCluster.Stop(context.Background())
	}
	if code == 0 {
		if err := goleak.Find(before); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// prepareExampleDatabase gives Example a migrated database in DATABASE_URL, as
// an order service would have.
func prepareExampleDatabase() error {
	ctx := context.Background()
	url, err := pgtest.Database(ctx, "example")
	if err != nil {
		return err
	}
	m, err := migrations.Open(ctx, url, "", nil)
	if err != nil {
		return err
	}
	defer m.Close()
	if _, err := m.Up(ctx); err != nil {
		return err
	}
	return os.Setenv("DATABASE_URL", url)
}
