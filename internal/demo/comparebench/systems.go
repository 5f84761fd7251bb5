package comparebench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/demo/debezium"
	"github.com/outboxrelay/outbox/internal/demo/procstat"
)

// system is one of the measured pipelines.
type system interface {
	// idHeader is the record header that carries the event id.
	idHeader() string
	// start streams r's slot into r's topic; it returns once the slot is
	// being read.
	start(ctx context.Context, r *run) (process, error)
}

// process is a started system; stop ends it and returns what it used over
// the run: CPU since start, peak resident set since start.
type process interface {
	stop(ctx context.Context) (procstat.Usage, error)
}

// relaySystem runs `outbox relay` as a child process per run.
type relaySystem struct {
	bin        string
	brokers    string
	maxLatency time.Duration
	logDir     string
}

func (s *relaySystem) idHeader() string { return envelope.HeaderEventID }

type relayProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func (s *relaySystem) start(ctx context.Context, r *run) (process, error) {
	log := filepath.Join(s.logDir, r.id+".log")
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	// The topic column routes every row, as for Debezium; the checkpoint
	// topic is the run's own.
	cmd := exec.Command(s.bin, "relay", "--database-url", r.url, "--schema", "outbox", "--slot", r.slot,
		"--brokers", s.brokers, "--checkpoint-topic", r.topic+".checkpoints",
		"--max-latency", s.maxLatency.String(), "--heartbeat", "2s")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "OUTBOX_LOG_LEVEL=warn")
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start relay: %w", err)
	}
	p := &relayProcess{cmd: cmd, done: make(chan struct{}), log: log}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	if err := r.waitSlotActive(ctx, p.done); err != nil {
		_, _ = p.stop(ctx)
		return nil, fmt.Errorf("relay (log %s): %w", log, err)
	}
	return p, nil
}

func (p *relayProcess) stop(context.Context) (procstat.Usage, error) {
	// The peak is read before the signal: the process is gone after it.
	u, _ := procstat.Read(p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return u, fmt.Errorf("relay did not stop within 30s of SIGTERM (log %s)", p.log)
	}
	ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return u, errors.New("relay: no rusage")
	}
	u.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return u, nil
}

// debeziumSystem adds a connector per run to one long-lived Connect worker.
type debeziumSystem struct {
	w     *debezium.Worker
	tuned bool
}

func (s *debeziumSystem) idHeader() string { return "id" }

type debeziumProcess struct {
	s      *debeziumSystem
	name   string
	before procstat.Usage
}

func (s *debeziumSystem) start(ctx context.Context, r *run) (process, error) {
	pid := s.w.PID()
	before, err := procstat.Read(pid)
	if err != nil {
		return nil, err
	}
	// The worker outlives runs: its peak resident set starts again here, so
	// the run's peak is its own (and never below what the worker holds).
	_ = procstat.ResetPeak(pid)
	name := strings.ReplaceAll(r.id, ".", "-")
	if err := s.w.AddOutboxConnector(ctx, debezium.Connector{Name: name, DatabaseURL: r.url, Slot: r.slot, Tuned: s.tuned}); err != nil {
		return nil, fmt.Errorf("debezium: %w (worker log: %s)", err, filepath.Join(s.w.Dir(), "connect.log"))
	}
	p := &debeziumProcess{s: s, name: name, before: before}
	if err := r.waitSlotActive(ctx, nil); err != nil {
		_, _ = p.stop(ctx)
		return nil, fmt.Errorf("debezium: %w (worker log: %s)", err, filepath.Join(s.w.Dir(), "connect.log"))
	}
	return p, nil
}

func (p *debeziumProcess) stop(ctx context.Context) (procstat.Usage, error) {
	u, err := procstat.Read(p.s.w.PID())
	if err != nil {
		return u, err
	}
	u.CPU -= p.before.CPU
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := p.s.w.DeleteConnector(dctx, p.name); err != nil {
		return u, fmt.Errorf("debezium: delete connector %s: %w", p.name, err)
	}
	return u, nil
}
