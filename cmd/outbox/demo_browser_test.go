package main

import (
	"context"
	"fmt"
	"regexp"
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
// report is out and the console lingers with the stages running again,
// finds an order by id and sees its outbox event, its commands and both
// external calls; then takes a payment the API declined (--decline-every)
// from the dead letters, replays it after a dry run, and sees the ledger
// say it succeeded, once, and the journey show the 422 and then the call
// that went through. SIGTERM ends the linger and the demo exits 0.
func TestDemoConsoleInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.New(t)
	db := pgtest.NewDatabase(t)
	addr := freeAddr(t)
	const token = "demo-console-token"
	// One order in three has its first charge declined (hashed by key: 30
	// orders leave none with a chance of 5e-6).
	demo := startStage(t, nil, "demo", "--database-url", db, "--orders", "30", "--rate", "20", "--quiet",
		"--console", addr, "--linger-console", "3m", "--timeout", "3m", "--decline-every", "3", "--console-token", token)
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
	browsertest.Screenshot(t, ctx, "../../docs", "console-demo-journey")

	// A declined payment, from the dead letters: a dry run, then the replay.
	before := paymentLedger(t, base)
	require.Positive(t, before["dead_lettered"], "declined payments are dead letters: %v", before)
	browsertest.Header(t, ctx, "Authorization", "Bearer "+token)
	browsertest.Step(t, ctx, "the payment dead letters",
		chromedp.Navigate(base+"/dlq?topic=commands.payment.dlt"), chromedp.WaitVisible(chromedp.ID("letters")))
	browsertest.Step(t, ctx, "dry run",
		chromedp.Click(chromedp.CSS(`#letters input[type=checkbox]`)),
		chromedp.Click(chromedp.ID("dry-run")),
		chromedp.WaitVisible(chromedp.ID("confirm-form")))
	require.Contains(t, browsertest.Text(t, ctx, "#summary"), "Dry run, nothing changed: would replay 1")
	eventID := uuidRe.FindString(browsertest.Text(t, ctx, "#outcomes"))
	require.NotEmpty(t, eventID, "the dry run names the event")
	require.Equal(t, before, paymentLedger(t, base), "a dry run changes nothing")
	browsertest.Step(t, ctx, "confirm and replay", chromedp.Click(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("replay")))
	eventually(t, time.Minute, "the replay's result", func() error {
		// The form's submit navigates: until the result page is there, the
		// node may be gone; ask again.
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS("#summary")))
		if err != nil {
			return err
		}
		if !strings.HasPrefix(s, "Replayed 1") {
			return fmt.Errorf("summary: %s", s)
		}
		return nil
	})
	eventually(t, 2*time.Minute, "the ledger says the replayed payment succeeded", func() error {
		after := paymentLedger(t, base)
		if after["succeeded"] != before["succeeded"]+1 || after["dead_lettered"] != before["dead_lettered"]-1 {
			return fmt.Errorf("before %v, now %v", before, after)
		}
		return nil
	})
	browsertest.Step(t, ctx, "the replayed payment's journey",
		chromedp.Navigate(base+"/journey?q="+eventID), chromedp.WaitVisible(chromedp.ID("timeline")))
	attempts = browsertest.Text(t, ctx, "table.attempts")
	require.Contains(t, attempts, "422", "the declined call")
	require.Contains(t, attempts, "201", "the replayed call that went through")
	browsertest.Screenshot(t, ctx, "../../docs", "console-demo-replayed")

	demo.stop(t, time.Minute)
	require.Equal(t, before["succeeded"]+1, paymentLedger0(t, db)["succeeded"], "succeeded once: the ledger in Postgres")
}

// uuidRe finds an event id.
var uuidRe = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// paymentLedger is the console's ledger counts of the payment endpoint.
func paymentLedger(t *testing.T, base string) map[string]int64 {
	t.Helper()
	var page struct {
		Endpoints []struct {
			Endpoint string           `json:"endpoint"`
			Rows     map[string]int64 `json:"rows"`
		} `json:"endpoints"`
	}
	getPage(t, base+"/ledger?window=24h&format=json", &page)
	for _, e := range page.Endpoints {
		if e.Endpoint == "payment" {
			return e.Rows
		}
	}
	return map[string]int64{}
}

// paymentLedger0 counts the payment endpoint's ledger rows per status in
// Postgres directly.
func paymentLedger0(t *testing.T, db string) map[string]int64 {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), db)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT status, count(*) FROM outbox.sink_ledger WHERE endpoint = 'payment' GROUP BY status`)
	require.NoError(t, err)
	out := map[string]int64{}
	for rows.Next() {
		var s string
		var n int64
		require.NoError(t, rows.Scan(&s, &n))
		out[s] = n
	}
	require.NoError(t, rows.Err())
	return out
}
