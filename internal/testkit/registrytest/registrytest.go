// Package registrytest gives tests a real Confluent-compatible schema
// registry: Apicurio Registry started by scripts/registry.sh, one per test
// binary, never a mock. It is test-only plumbing beside pgtest and kafkatest:
// the tests of `outbox schema check` compare their verdicts with the
// registry's own, and no production package imports it.
//
// OUTBOX_TEST_REGISTRY_URL, when set, names an existing registry's
// Confluent-compatible base URL instead (a Confluent Schema Registry, say);
// tests use subjects of their own, so a shared registry is fine.
package registrytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/outboxrelay/outbox/schema"
)

// EnvURL names an existing registry to use instead of starting one.
const EnvURL = "OUTBOX_TEST_REGISTRY_URL"

// Registry is a running registry of scripts/registry.sh.
type Registry struct {
	// URL is the Confluent-compatible base URL, ending in /apis/ccompat/v7.
	URL string
	// Dir holds the registry's pid, port and log.
	Dir string

	script string
}

// script finds scripts/registry.sh above the working directory.
func script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("registrytest: %w", err)
	}
	for {
		p := filepath.Join(dir, "scripts", "registry.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("registrytest: scripts/registry.sh not found above the working directory: run from a checkout of the outbox repository")
		}
		dir = parent
	}
}

// Start starts a registry in dir (a fresh folder) and returns once it
// answers. The registry stops by itself when this process exits, so a
// killed test binary leaves none behind; Stop stops it sooner.
func Start(ctx context.Context, dir string) (*Registry, error) {
	s, err := script()
	if err != nil {
		return nil, err
	}
	r := &Registry{Dir: dir, script: s}
	out, err := r.run(ctx, "start", dir)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	r.URL = strings.TrimRight(strings.TrimSpace(lines[len(lines)-1]), "/")
	if !strings.HasPrefix(r.URL, "http://") {
		return nil, fmt.Errorf("registrytest: scripts/registry.sh start printed %q, not a URL", out)
	}
	if !strings.Contains(r.URL, "/apis/ccompat/") {
		r.URL += "/apis/ccompat/v7"
	}
	return r, nil
}

// Stop stops the registry; it may be called twice.
func (r *Registry) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.run(ctx, "stop", r.Dir)
	return err
}

func (r *Registry) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{r.script}, args...)...)
	cmd.Env = append(os.Environ(), "OUTBOX_REGISTRY_WATCH_PID="+strconv.Itoa(os.Getpid()))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("registrytest: scripts/registry.sh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

var (
	sharedOnce sync.Once
	shared     *Registry
	sharedURL  string
	sharedErr  error
)

// URL is the test binary's registry: OUTBOX_TEST_REGISTRY_URL, or one
// started on first use and shared by every test of the binary. It fails the
// test with the script's message (what to install) when Java or Maven is
// missing; it never skips.
func URL(t testing.TB) string {
	t.Helper()
	sharedOnce.Do(func() {
		if u := os.Getenv(EnvURL); u != "" {
			sharedURL = strings.TrimRight(u, "/")
			return
		}
		dir, err := os.MkdirTemp("", "outbox-registry-")
		if err != nil {
			sharedErr = fmt.Errorf("registrytest: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		shared, sharedErr = Start(ctx, dir)
		if shared != nil {
			sharedURL = shared.URL
		}
	})
	if sharedErr != nil {
		t.Fatalf("registrytest: this test needs a schema registry: %v", sharedErr)
	}
	return sharedURL
}

// StopShared stops the binary's shared registry, if one was started, and
// removes its folder. Call it from TestMain after the tests ran; without it
// the registry stops within a second of the binary's exit.
func StopShared() {
	if shared != nil {
		_ = shared.Stop()
		_ = os.RemoveAll(shared.Dir)
	}
}

// Main runs the tests, then stops the shared registry: for a TestMain that
// has nothing else to do, os.Exit(registrytest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	StopShared()
	return code
}

// Client is a franz-go registry client of the test binary's registry
// (URL), with a request timeout and no idle connections kept, so tests
// that check for leaked goroutines (goleak) stay clean.
func Client(t testing.TB) *sr.Client {
	t.Helper()
	cl, err := sr.NewClient(sr.URLs(URL(t)), sr.HTTPClient(&http.Client{
		Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}))
	if err != nil {
		t.Fatalf("registrytest: registry client: %v", err)
	}
	return cl
}

// Wire registers avsc as version 1 of a new event type, prefix plus a
// unique suffix (the registry is shared by the test binary), and returns a
// schema.Wire that writes that event type in the Confluent wire format,
// with the event type.
func Wire(ctx context.Context, t testing.TB, prefix, avsc string) (*schema.Wire, string) {
	t.Helper()
	cl := Client(t)
	eventType := fmt.Sprintf("%s.%d", prefix, time.Now().UnixNano())
	set, err := schema.LoadFiles(map[string][]byte{eventType + "/v1.avsc": []byte(avsc)})
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	if _, err := schema.Register(ctx, cl, set); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	w, err := schema.NewWire(schema.WireConfig{Registry: cl, Set: set})
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return w, eventType
}
