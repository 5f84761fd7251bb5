package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/testkit/browsertest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
)

// TestDemoConsoleInBrowser: the demo serves the console while it runs.
// Headless Chromium opens its pipeline page during the run (the demo's
// relay holds its slot, the stages' metrics are scraped), then, once the
// report is out and the console lingers, finds an order by id and sees its
// outbox event, its commands and both external calls succeeded; SIGTERM
// ends the linger and the demo exits 0.
func TestDemoConsoleInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.New(t)
	db := pgtest.NewDatabase(t)
	addr := freeAddr(t)
	demo := startStage(t, nil, "demo", "--database-url", db, "--orders", "30", "--rate", "20", "--quiet",
		"--console", addr, "--linger-console", "3m", "--timeout", "3m")
	base := "http://" + addr
	eventually(t, time.Minute, "the demo prints the console's URL", func() error {
		demo.running(t)
		if !strings.Contains(demo.stdout.String(), "console: "+base+"/") {
			return fmt.Errorf("not yet: %s", demo.stdout.String())
		}
		return nil
	})

	// During the run: the relay holds the demo's slot.
	eventually(t, time.Minute, "the pipeline page shows the demo's relay active", func() error {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, chromedp.Navigate(base+"/")); err != nil {
			return err
		}
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS("#relays")))
		if err != nil {
			return err
		}
		if !strings.Contains(s, "outbox_relay") || !strings.Contains(s, "active") {
			return fmt.Errorf("relays: %s", s)
		}
		return nil
	})
	browsertest.Screenshot(t, ctx, "../../docs", "console-demo-pipeline")

	eventually(t, 3*time.Minute, "the demo's report, then the linger", func() error {
		demo.running(t)
		if !strings.Contains(demo.stdout.String(), "stays up for") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	require.Contains(t, demo.stdout.String(), "\nPASS: ")

	conn, err := pgx.Connect(ctx, db)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var orderID string
	require.NoError(t, conn.QueryRow(ctx, `SELECT order_id FROM demo_orders ORDER BY order_id LIMIT 1`).Scan(&orderID))

	browsertest.Step(t, ctx, "search the order",
		chromedp.Navigate(base+"/journey"),
		chromedp.SendKeys(chromedp.ID("q"), orderID),
		chromedp.Click(chromedp.ID("search")),
		chromedp.WaitVisible(chromedp.ID("timeline")))
	attempts := browsertest.Text(t, ctx, "table.attempts")
	for _, want := range []string{"payment", "shipping", "succeeded"} {
		require.Contains(t, attempts, want, "the order's external calls")
	}
	require.Contains(t, browsertest.Text(t, ctx, "#done"), "reached its endpoints")
	browsertest.Screenshot(t, ctx, "../../docs", "console-demo-journey")

	demo.stop(t, time.Minute)
}
