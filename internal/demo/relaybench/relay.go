package relaybench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/outboxrelay/outbox/internal/demo/procstat"
)

// relayChild is an `outbox relay` child process.
type relayChild struct {
	cmd     *exec.Cmd
	log     string
	started time.Time
	done    chan struct{} // closed once Wait returned
}

// startRelay starts `outbox relay args...` as phase name, logging to the
// bench's temp dir.
func (b *bench) startRelay(ctx context.Context, name string, args []string) (*relayChild, error) {
	bin := b.cfg.Binary
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		bin = self
	}
	logPath := filepath.Join(b.tmp, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(append(os.Environ(), "OUTBOX_LOG_LEVEL=warn"), b.cfg.RelayEnv...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench relay: start relay: %w", err)
	}
	c := &relayChild{cmd: cmd, log: logPath, started: start, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

// stop sends SIGTERM, waits for a clean exit and returns the child's usage.
// Peak RSS comes from /proc/PID/status VmHWM read just before the signal:
// rusage's maxrss of a child started with vfork counts the parent's RSS at
// the fork (Linux records the old mm's high-water mark at exec).
func (c *relayChild) stop() (Usage, error) {
	// 0 when unknown.
	u, _ := procstat.Read(c.cmd.Process.Pid)
	hwm := u.PeakRSSKB
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return Usage{}, errors.New("bench relay: relay did not stop within 30s of SIGTERM")
	}
	ps := c.cmd.ProcessState
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return Usage{}, errors.New("bench relay: no rusage")
	}
	return Usage{
		CPU:       time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		PeakRSSKB: hwm,
	}, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
