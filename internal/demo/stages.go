package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sql"
)

// relaySlot is the replication slot the demo's relay creates (the relay's
// default for the outbox schema).
const relaySlot = "outbox_relay"

// stage is one pipeline stage run as a child process of the outbox binary.
type stage struct {
	name, bin, logPath string
	args, env          []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	// killing is set while chaos kills the process on purpose; exited is
	// why the process ended when nobody asked it to (see failure).
	killing bool
	exited  error
}

// failure is why the stage's process ended on its own, nil while it runs
// or when the demo (stop) or chaos (kill) ended it.
func (s *stage) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exited
}

// stageEndpoints are where the stages reach the rest of the demo.
type stageEndpoints struct {
	dbURL, brokers          string
	paymentURL, shippingURL string
	// metrics are the stages' --metrics-addr by stage name, for the demo's
	// console to scrape; a stage without one serves no metrics.
	metrics map[string]string
}

// stageNames are the stages newStages returns, in its order.
var stageNames = []string{"relay", "transform", "sink-payment", "sink-shipping"}

// stageMetricsAddrs picks a free loopback address for each stage's
// /metrics. The ports are held together while picked, so they differ, and
// come from below the kernel's ephemeral range: a port from that range
// (":0") is handed to the next connection or listener that asks, and on a
// busy machine one was taken before the stage bound it. A stage that still
// cannot bind its port exits, and the demo says so (stage.failure).
func stageMetricsAddrs() (map[string]string, error) {
	out := map[string]string{}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	lo := ephemeralLow()
	for _, name := range stageNames {
		var ln net.Listener
		var err error
		for try := 0; try < 50; try++ {
			addr := "127.0.0.1:0"
			if lo > 11024 {
				addr = fmt.Sprintf("127.0.0.1:%d", lo-10000+rand.IntN(10000))
			}
			if ln, err = net.Listen("tcp", addr); err == nil {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("demo: metrics address for %s: %w", name, err)
		}
		lns = append(lns, ln)
		out[name] = ln.Addr().String()
	}
	return out, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux:
// /proc/sys/net/ipv4/ip_local_port_range), 0 where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		return 0
	}
	return lo
}

// newStages returns the relay, the orders transform and the two sinks, not
// yet started, logging to logDir.
func newStages(bin string, env []string, logDir string, ep stageEndpoints) []*stage {
	stages := []*stage{
		{name: "relay", args: []string{"relay", "--database-url", ep.dbURL, "--brokers", ep.brokers, "--create-topics", "--heartbeat", "2s", "--shutdown-timeout", "5s"}},
		{name: "transform", args: []string{"transform", "--brokers", ep.brokers, "--group", "demo-transform", "--input", EventsTopic, "--transactional-id", "demo-transform-1",
			// A SIGKILLed member holds its partitions until its session times out;
			// a short one lets chaos restarts resume in seconds. 6s is the floor
			// of Apache Kafka's group.min.session.timeout.ms (default), so a real
			// broker accepts it (kfake takes any value).
			"--session-timeout", "6s", "--transaction-timeout", "5s",
			// Large orders arrive by reference; their payloads are in Postgres.
			"--claim-check", "--claim-check-database-url", ep.dbURL}},
		{name: "sink-payment", args: sinkArgs(ep.dbURL, ep.brokers, "payment", ep.paymentURL, true)},
		{name: "sink-shipping", args: sinkArgs(ep.dbURL, ep.brokers, "shipping", ep.shippingURL, false)},
	}
	for _, s := range stages {
		s.bin, s.env, s.logPath = bin, env, filepath.Join(logDir, s.name+".log")
		if addr := ep.metrics[s.name]; addr != "" {
			s.args = append(s.args, "--metrics-addr", addr)
		}
	}
	return stages
}

// sinkArgs are the `outbox sink` arguments for one of the demo's APIs.
// Backoffs are short and there is one retry tier so the demo settles in
// seconds; the 1s call timeout is below the mock APIs' 3s "slow" answers, so
// some calls end with their outcome unknown, as in production.
func sinkArgs(dbURL, brokers, name, apiURL string, idempotent bool) []string {
	return []string{"sink", "--database-url", dbURL, "--brokers", brokers,
		"--group", "demo-sink-" + name, "--instance-id", "demo-sink-" + name, "--topics", "commands." + name, "--endpoint", name,
		"--url", apiURL + "/" + name + "s", fmt.Sprintf("--idempotent=%t", idempotent),
		"--reconcile-url", apiURL + "/status/{{.ID}}",
		"--timeout", "1s", "--retries", "8", "--backoff-initial", "200ms", "--backoff-max", "2s",
		"--retry-tiers", "1s", "--breaker-failures", "20", "--breaker-cooldown", "1s", "--shutdown-timeout", "5s"}
}

func (s *stage) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("demo: %s log: %w", s.name, err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), s.env...)
	// The stage dies with the demo, whatever kills the demo.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("demo: start %s: %w", s.name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		logf.Close()
		s.mu.Lock()
		if s.cmd == cmd && !s.killing {
			s.exited = fmt.Errorf("demo: stage %s exited on its own (%v); its log: %s", s.name, exitText(err), s.logPath)
		}
		s.mu.Unlock()
		close(done)
	}()
	s.cmd, s.done, s.killing, s.exited = cmd, done, false, nil
	return nil
}

// kill SIGKILLs the stage and waits for it to exit.
func (s *stage) kill() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.killing = true
	s.mu.Unlock()
	if cmd == nil {
		return errors.New("not running")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-done
	return nil
}

// stop sends SIGTERM and waits up to grace, then SIGKILLs. It does nothing
// when the stage is not running.
func (s *stage) stop(grace time.Duration) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// exitText is how a process ended: "exit status 1", "signal: killed".
func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// stopAll stops every stage at once, each with grace.
func stopAll(stages []*stage, grace time.Duration) {
	var wg sync.WaitGroup
	for _, s := range stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stop(grace)
		}()
	}
	wg.Wait()
}

// waitForSlot waits until the relay has created its replication slot.
func waitForSlot(ctx context.Context, pool *pgxpool.Pool, slot string, max time.Duration) error {
	deadline := time.Now().Add(max)
	for {
		if _, err := sql.New().RelaySlot(ctx, pool, slot); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the relay did not create slot %s within %s; see its log", slot, max)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
