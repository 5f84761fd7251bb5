package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// child is a running ingest server process (this test binary re-executed).
type child struct {
	cmd    *exec.Cmd
	stderr lockedBuffer
	addr   string
	done   chan struct{} // closed when the process has exited
	err    error         // its Wait error, set before done is closed
}

func startChild(t *testing.T, url, crashPoint string) *child {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	raw, err := json.Marshal(childConfig{DatabaseURL: url, AddrFile: addrFile, CrashPoint: crashPoint, Secret: stripeSecret})
	require.NoError(t, err)
	c := &child{cmd: exec.Command(os.Args[0], "-test.run=^$"), done: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), envChild+"="+string(raw))
	c.cmd.Stderr = &c.stderr
	require.NoError(t, c.cmd.Start())
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			c.addr = "http://" + string(b)
			return c
		}
		require.True(t, time.Now().Before(deadline), "child did not start\n%s", c.stderr.String())
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer is a bytes.Buffer the child writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCrashAfterCommitBeforeAnswer SIGKILLs a child ingest server after a
// delivery's transaction committed and before its 2xx was sent: the
// provider sees a broken connection and retries; a restarted server answers
// the retry 200 from the stored answer, and the delivery exists once: one
// raw event, one record, one event.
func TestCrashAfterCommitBeforeAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	body := stripeEvent("evt_crash", "cus_crash", 7)

	first := startChild(t, b.url, string(hookAfterCommit))
	req, err := http.NewRequest(http.MethodPost, first.addr+"/webhooks/stripe", strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("Stripe-Signature", stripeHeader(stripeSecret, time.Now().Unix(), body))
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("the killed child answered %d", resp.StatusCode)
	}
	select {
	case <-first.done:
	case <-time.After(30 * time.Second):
		t.Fatal("child not killed at the hook")
	}
	var ee *exec.ExitError
	require.True(t, errors.As(first.err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL, "child died of SIGKILL, got %v\n%s", first.err, first.stderr.String())
	require.Equal(t, counts{raw: 1, records: 1, events: 1, keys: 1, entities: 1}, b.counts(), "committed before the kill")

	// The provider retries (a new signature, the same body) against a restarted server.
	second := startChild(t, b.url, "")
	code, got, h := postTo(t, second.addr, "stripe", body, map[string]string{"Stripe-Signature": stripeHeader(stripeSecret, time.Now().Unix(), body)})
	require.Equal(t, http.StatusOK, code, got)
	require.Contains(t, got, `"outcome":"accepted"`)
	require.Equal(t, "true", h.Get("Idempotent-Replayed"))
	require.Equal(t, counts{raw: 1, records: 1, events: 1, keys: 1, entities: 1}, b.counts(), "the retry wrote nothing")

	require.NoError(t, second.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-second.done:
		require.NoError(t, second.err, "clean exit on SIGTERM\n%s", second.stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("child did not stop on SIGTERM")
	}
}
