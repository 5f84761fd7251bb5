// Package browsertest gives tests a real headless browser: Debian's
// Chromium driven through chromedp, started with the flags that keep it
// from reaching out on a closed network. It is test-only plumbing beside
// pgtest and kafkatest: the console's browser tests (internal/console, and
// the demo's console in cmd/outbox) drive their pages with it, and no
// production package imports it.
//
// OUTBOX_CHROMIUM names a Chromium or Chrome binary other than
// /usr/bin/chromium; scripts/ensure-chromium.sh installs Debian's.
// OUTBOX_SCREENSHOTS=1 makes Screenshot write into the repository's docs/
// folder instead of the test's temporary one.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// Environment variables the package reads.
const (
	EnvChromium    = "OUTBOX_CHROMIUM"
	EnvScreenshots = "OUTBOX_SCREENSHOTS"
)

// chromium returns the browser binary, failing the test with the install
// command when there is none (never a skip).
func chromium(t testing.TB) string {
	t.Helper()
	path := os.Getenv(EnvChromium)
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("browsertest: this test needs Chromium at %s (%v): run scripts/ensure-chromium.sh (apt-get install -y chromium), or set %s", path, err, EnvChromium)
	}
	return path
}

// New starts a headless Chromium for the test (stopped at its cleanup) and
// returns a tab's context.
func New(t testing.TB) context.Context {
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

// Step runs actions within 30s, failing the test with what on an error.
func Step(t testing.TB, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, chromedp.Do(sctx, actions...), what)
}

// Text is the text of the first element matching css.
func Text(t testing.TB, ctx context.Context, css string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(css)))
	require.NoError(t, err, "text of %s", css)
	return s
}

// Screenshot saves the whole page as NAME.png: into docsDir (the
// repository's docs/ folder, relative to the test's package) with
// OUTBOX_SCREENSHOTS=1, into the test's temporary folder otherwise, so a
// test run leaves the tree as it was.
func Screenshot(t testing.TB, ctx context.Context, docsDir, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	buf, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	require.NoError(t, err, "screenshot %s", name)
	require.Greater(t, len(buf), 1000, "screenshot %s is an image", name)
	require.Equal(t, "\x89PNG", string(buf[:4]), "screenshot %s is a PNG", name)
	dir := t.TempDir()
	if os.Getenv(EnvScreenshots) == "1" {
		dir = docsDir
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644))
}

// Header makes the tab send header key: value with every request from now
// on (a console token: Authorization: Bearer T).
func Header(t testing.TB, ctx context.Context, key, value string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, chromedp.Do(sctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{key: value}})
		return err
	})), "set header %s", key)
}
