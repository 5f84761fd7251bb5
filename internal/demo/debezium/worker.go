// Package debezium runs the peer that `outbox bench compare` measures the
// relay against: Debezium's Postgres connector with its outbox EventRouter,
// on an Apache Kafka Connect worker in distributed mode with exactly-once
// source support (KIP-618), from Maven Central jars through
// scripts/connect.sh. It reads the same outbox table, from the same Postgres,
// and writes the same topics of the same Apache Kafka (internal/demo/apachekafka)
// as the relay does, so the two can be timed on one workload.
//
// It needs a checkout (the script and scripts/debezium/pom.xml), Java 17+
// and, until the jars are cached, Maven. It is demo and benchmark plumbing:
// the binary's relay never imports it.
package debezium

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
	"time"
)

// EnvScript points at scripts/connect.sh when the working directory is not
// inside a checkout.
const EnvScript = "OUTBOX_CONNECT_SCRIPT"

// Script returns the path of scripts/connect.sh: OUTBOX_CONNECT_SCRIPT, else
// found by walking up from the working directory to the module root.
func Script() (string, error) {
	if p := os.Getenv(EnvScript); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "connect.sh")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("debezium: scripts/connect.sh not found above the working directory: run from a checkout of the outbox repository, or set " + EnvScript)
		}
		dir = up
	}
}

// Config says what Connect worker to start.
type Config struct {
	// Bootstrap is the Kafka cluster the worker keeps its config, offset and
	// status topics in and the connectors write to, as HOST:PORT[,HOST:PORT].
	// Required.
	Bootstrap string
	// Dir holds the worker's properties, its log (connect.log) and pid file.
	// A Dir used before starts the same worker again (same group, topics and
	// REST port). Defaults to a new temp folder.
	Dir string
	// Heap is the JVM's heap flags. Defaults to "-Xms256m -Xmx2g", what
	// Kafka's connect-distributed.sh gives a worker.
	Heap string
	// JavaOpts are more JVM flags, added after the script's own. Defaults to none.
	JavaOpts string
	// Group is the worker's group.id and the prefix of its three topics.
	// Defaults to a random outbox-connect-XXXXXXXX.
	Group string
	// StartTimeout bounds the wait for the worker's REST API to report it
	// healthy (after the jars are fetched). Defaults to 120s.
	StartTimeout time.Duration
}

// Worker is a running Connect worker, from scripts/connect.sh.
type Worker struct {
	dir    string
	url    string
	pid    int
	script string
	http   *http.Client
}

// Start fetches the jars when they are not cached, starts a Connect worker
// and returns once its REST API reports it healthy. It fails with the
// script's message (what to install) when Java or Maven is missing; it never
// skips. A worker outlives a cancelled ctx only until this process exits
// (OUTBOX_CONNECT_WATCH_PID); call Stop.
func Start(ctx context.Context, cfg Config) (*Worker, error) {
	if cfg.Bootstrap == "" {
		return nil, errors.New("debezium: Config.Bootstrap is required: the Kafka cluster the worker stores its state in")
	}
	script, err := Script()
	if err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "outbox-connect-*"); err != nil {
			return nil, err
		}
	}
	w := &Worker{dir: cfg.Dir, script: script, http: &http.Client{Timeout: 30 * time.Second}}
	args := []string{"start", cfg.Dir, "--bootstrap", cfg.Bootstrap}
	if cfg.Group != "" {
		args = append(args, "--group", cfg.Group)
	}
	env := []string{}
	if cfg.Heap != "" {
		env = append(env, "OUTBOX_CONNECT_HEAP="+cfg.Heap)
	}
	if cfg.JavaOpts != "" {
		env = append(env, "OUTBOX_CONNECT_JAVA_OPTS="+cfg.JavaOpts)
	}
	if cfg.StartTimeout > 0 {
		env = append(env, "OUTBOX_CONNECT_START_TIMEOUT="+strconv.Itoa(int(cfg.StartTimeout.Round(time.Second)/time.Second)))
	}
	out, err := w.run(ctx, env, args...)
	if err != nil {
		// A start that failed or was cancelled half way may have left the JVM
		// running: stop whatever the folder holds.
		_ = w.Stop()
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	w.url = lines[len(lines)-1]
	if !strings.HasPrefix(w.url, "http://") {
		_ = w.Stop()
		return nil, fmt.Errorf("debezium: scripts/connect.sh start printed %q, not the REST URL", w.url)
	}
	pidOut, err := w.run(ctx, nil, "pid", cfg.Dir)
	if err != nil {
		_ = w.Stop()
		return nil, err
	}
	if w.pid, err = strconv.Atoi(strings.TrimSpace(pidOut)); err != nil {
		_ = w.Stop()
		return nil, fmt.Errorf("debezium: worker pid %q: %w", pidOut, err)
	}
	return w, nil
}

func (w *Worker) run(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{w.script}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A killed test or bench binary leaves no worker behind.
	cmd.Env = append(append(os.Environ(), "OUTBOX_CONNECT_WATCH_PID="+strconv.Itoa(os.Getpid())), env...)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("debezium: scripts/connect.sh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// PID is the worker JVM's process id, for reading its CPU time and memory
// from /proc (internal/demo/procstat). The JVM is not a child of this
// process: its usage is not in this process's rusage.
func (w *Worker) PID() int { return w.pid }

// URL is the worker's REST API, http://127.0.0.1:PORT.
func (w *Worker) URL() string { return w.url }

// Dir is the worker's folder: worker.properties, connect.log, pid.
func (w *Worker) Dir() string { return w.dir }

// Stop stops the worker (SIGTERM, SIGKILL after 30s) and waits until the
// JVM is gone. Connectors stay configured in Kafka: a worker started again
// on the same Dir resumes them from their offsets. Stop may be called twice.
func (w *Worker) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w.http.CloseIdleConnections()
	_, err := w.run(ctx, nil, "stop", w.dir)
	return err
}
