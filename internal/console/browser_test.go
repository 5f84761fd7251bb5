package console_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/console"
	"github.com/outboxrelay/outbox/sink"
)

// envChromium names a Chromium or Chrome binary other than /usr/bin/chromium.
const envChromium = "OUTBOX_CHROMIUM"

// envScreenshots=1 makes the browser test save its screenshots into docs/,
// where the README shows them (`OUTBOX_SCREENSHOTS=1 go test -run
// TestBrowserOnCallFlow ./internal/console/`); otherwise they go to the
// test's temporary folder, so a test run leaves the tree as it was.
const envScreenshots = "OUTBOX_SCREENSHOTS"

// screenshotDir is where screenshots go (see envScreenshots).
func screenshotDir(t *testing.T) string {
	if os.Getenv(envScreenshots) == "1" {
		return "../../docs"
	}
	return t.TempDir()
}

// chromium returns the browser binary, failing the test with the install
// command when there is none.
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv(envChromium)
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("the console's browser test needs Chromium at %s (%v): run scripts/ensure-chromium.sh (apt-get install -y chromium), or set %s", path, err, envChromium)
	}
	return path
}

// browser starts a headless Chromium with the flags that keep it from
// reaching out on a closed network, and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser; it must not carry a timeout.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")), "start chromium")
	return ctx
}

// step runs actions with a deadline.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, chromedp.Do(sctx, actions...), what)
}

// text returns the text of the first element matching css.
func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(css)))
	require.NoError(t, err, "text of %s", css)
	return s
}

// screenshot saves the whole page as docs/console-NAME.png.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	buf, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	require.NoError(t, err, "screenshot %s", name)
	require.Greater(t, len(buf), 1000, "screenshot %s is an image", name)
	require.Equal(t, "\x89PNG", string(buf[:4]), "screenshot %s is a PNG", name)
	require.NoError(t, os.WriteFile(filepath.Join(screenshotDir(t), "console-"+name+".png"), buf, 0o644))
}

// TestBrowserOnCallFlow drives the console in headless Chromium the way
// on-call uses it: the pipeline page, an order's journey with its call, and
// a dead letter replayed after a dry run, then the journey showing the call
// that succeeded. It saves a screenshot of each page under docs/.
func TestBrowserOnCallFlow(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
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
	step(t, ctx, "open the pipeline", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("svg.chart")))
	require.Contains(t, text(t, ctx, "#groups"), "ERR(STOP)")
	require.Contains(t, text(t, ctx, "#relays"), p.prefix+"_relay")
	require.Contains(t, text(t, ctx, "#deadletters"), p.dlq)
	screenshot(t, ctx, "pipeline")

	// Search an order in the journey and see its call.
	step(t, ctx, "search an order",
		chromedp.Navigate(srv.URL+"/journey"),
		chromedp.SendKeys(chromedp.ID("q"), good.ID),
		chromedp.Click(chromedp.ID("search")),
		chromedp.WaitVisible(chromedp.ID("timeline")))
	attempts := text(t, ctx, "table.attempts")
	require.Contains(t, attempts, "succeeded")
	require.Contains(t, attempts, "ch_"+good.ID, "the API's answer")
	require.Contains(t, text(t, ctx, "#done"), "reached its endpoints")
	screenshot(t, ctx, "journey")

	// The dead letters: without the token the dry run is refused.
	step(t, ctx, "list the dead letters", chromedp.Navigate(srv.URL+"/dlq?topic="+p.dlq), chromedp.WaitVisible(chromedp.ID("letters")))
	require.Contains(t, text(t, ctx, "#letters"), bad.EventID.String())
	step(t, ctx, "dry run without the token", chromedp.Click(chromedp.ID("dry-run")), chromedp.WaitVisible(chromedp.ID("message")))
	require.Contains(t, text(t, ctx, "#message"), "needs the console's token")

	// With the token: dry run, then the confirmed replay.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, chromedp.Do(sctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": "Bearer " + token}})
		return err
	})))
	step(t, ctx, "dry run",
		chromedp.Navigate(srv.URL+"/dlq?topic="+p.dlq),
		chromedp.Click(chromedp.CSS(`#letters input[type=checkbox]`)),
		chromedp.Click(chromedp.ID("dry-run")),
		chromedp.WaitVisible(chromedp.ID("confirm-form")))
	require.Contains(t, text(t, ctx, "#summary"), "Dry run, nothing changed: would replay 1")
	require.Contains(t, text(t, ctx, "#outcomes"), bad.EventID.String())
	screenshot(t, ctx, "dlq-dry-run")
	p.requireNotReplayed(context.Background(), t, bad)

	p.api.accept(bad.ID)
	step(t, ctx, "confirm and replay", chromedp.Click(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("replay")))
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
	step(t, ctx, "journey of the replayed order",
		chromedp.Navigate(srv.URL+"/journey?q="+bad.ID), chromedp.WaitVisible(chromedp.ID("done")))
	attempts = text(t, ctx, "table.attempts")
	require.Contains(t, attempts, "422")
	require.Contains(t, attempts, "200")
	step(t, ctx, "ledger", chromedp.Navigate(srv.URL+"/ledger?window=24h"), chromedp.WaitVisible(chromedp.ID("ledger")))
	require.Contains(t, text(t, ctx, "#ledger"), "payments")
	screenshot(t, ctx, "ledger")
	t.Logf("browser flow took %s", time.Since(began).Round(time.Millisecond))
}
