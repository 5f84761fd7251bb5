package console_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/console"
	"github.com/outboxrelay/outbox/internal/testkit/browsertest"
	"github.com/outboxrelay/outbox/sink"
)

// docsDir is the repository's docs/ folder, where OUTBOX_SCREENSHOTS=1
// writes the screenshots the README shows (`OUTBOX_SCREENSHOTS=1 go test
// -run TestBrowserOnCallFlow ./internal/console/`).
const docsDir = "../../docs"

// screenshot saves the page as docs/console-NAME.png (see browsertest).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	browsertest.Screenshot(t, ctx, docsDir, "console-"+name)
}

// TestBrowserOnCallFlow drives the console in headless Chromium the way
// on-call uses it: the pipeline page, an order's journey with its call, and
// a dead letter replayed after a dry run, then the journey showing the call
// that succeeded. It saves a screenshot of each page under docs/.
func TestBrowserOnCallFlow(t *testing.T) {
	t.Parallel()
	ctx := browsertest.New(t)
	p := newPipeline(t, 4, 1)
	const token = "browser-token"
	srv := p.console(func(c *console.Config) { c.AllowActions, c.Token = true, token })
	good, bad := p.orders[1], p.orders[0]
	began := time.Now()

	// The pipeline page, once the chart has two samples and the stalled group.
	require.Eventually(t, func() bool {
		var page pipelineJSON
		if getJSON(t, srv, "/", &page) != 200 {
			return false
		}
		for _, g := range page.Lag.Groups {
			if g.Group == p.stalled {
				return !page.At.Before(began.Add(time.Second))
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond)
	browsertest.Step(t, ctx, "open the pipeline", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("svg.chart")))
	require.Contains(t, browsertest.Text(t, ctx, "#groups"), "ERR(STOP)")
	require.Contains(t, browsertest.Text(t, ctx, "#relays"), p.prefix+"_relay")
	require.Contains(t, browsertest.Text(t, ctx, "#deadletters"), p.dlq)
	screenshot(t, ctx, "pipeline")

	// Search an order in the journey and see its call.
	browsertest.Step(t, ctx, "search an order",
		chromedp.Navigate(srv.URL+"/journey"),
		chromedp.SendKeys(chromedp.ID("q"), good.ID),
		chromedp.Click(chromedp.ID("search")),
		chromedp.WaitVisible(chromedp.ID("timeline")))
	attempts := browsertest.Text(t, ctx, "table.attempts")
	require.Contains(t, attempts, "succeeded")
	require.Contains(t, attempts, "ch_"+good.ID, "the API's answer")
	require.Contains(t, browsertest.Text(t, ctx, "#done"), "reached its endpoints")
	screenshot(t, ctx, "journey")

	// The dead letters: without the token the dry run is refused.
	browsertest.Step(t, ctx, "list the dead letters", chromedp.Navigate(srv.URL+"/dlq?topic="+p.dlq), chromedp.WaitVisible(chromedp.ID("letters")))
	require.Contains(t, browsertest.Text(t, ctx, "#letters"), bad.EventID.String())
	browsertest.Step(t, ctx, "dry run without the token", chromedp.Click(chromedp.ID("dry-run")), chromedp.WaitVisible(chromedp.ID("message")))
	require.Contains(t, browsertest.Text(t, ctx, "#message"), "needs the console's token")

	// With the token: dry run, then the confirmed replay.
	browsertest.Header(t, ctx, "Authorization", "Bearer "+token)
	browsertest.Step(t, ctx, "dry run",
		chromedp.Navigate(srv.URL+"/dlq?topic="+p.dlq),
		chromedp.Click(chromedp.CSS(`#letters input[type=checkbox]`)),
		chromedp.Click(chromedp.ID("dry-run")),
		chromedp.WaitVisible(chromedp.ID("confirm-form")))
	require.Contains(t, browsertest.Text(t, ctx, "#summary"), "Dry run, nothing changed: would replay 1")
	require.Contains(t, browsertest.Text(t, ctx, "#outcomes"), bad.EventID.String())
	screenshot(t, ctx, "dlq-dry-run")
	p.requireNotReplayed(context.Background(), t, bad)

	p.api.accept(bad.ID)
	browsertest.Step(t, ctx, "confirm and replay", chromedp.Click(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("replay")))
	require.Eventually(t, func() bool {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS("#summary")))
		return err == nil && strings.HasPrefix(s, "Replayed 1")
	}, 30*time.Second, 100*time.Millisecond, "the replay's result page")
	screenshot(t, ctx, "dlq-replayed")

	// The ledger says the call succeeded, once; the journey shows both calls.
	lctx, lcancel := context.WithTimeout(context.Background(), time.Minute)
	defer lcancel()
	p.waitLedger(lctx, map[string]int64{sink.StatusSucceeded: 4})
	require.Equal(t, 1, p.api.accepted(bad.ID))
	browsertest.Step(t, ctx, "journey of the replayed order",
		chromedp.Navigate(srv.URL+"/journey?q="+bad.ID), chromedp.WaitVisible(chromedp.ID("done")))
	attempts = browsertest.Text(t, ctx, "table.attempts")
	require.Contains(t, attempts, "422")
	require.Contains(t, attempts, "200")
	browsertest.Step(t, ctx, "ledger", chromedp.Navigate(srv.URL+"/ledger?window=24h"), chromedp.WaitVisible(chromedp.ID("ledger")))
	require.Contains(t, browsertest.Text(t, ctx, "#ledger"), "payments")
	screenshot(t, ctx, "ledger")
	t.Logf("browser flow took %s", time.Since(began).Round(time.Millisecond))
}
