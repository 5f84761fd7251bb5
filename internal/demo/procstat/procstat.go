// Package procstat reads a process's CPU time and resident memory from
// /proc: how the benches (`outbox bench relay`, `outbox bench compare`)
// charge CPU and memory to the relay, to Debezium's Connect worker and to
// the Kafka broker, each a process of its own.
package procstat

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage is what a process has used so far.
type Usage struct {
	// CPU is user plus system time.
	CPU time.Duration
	// RSSKB is the resident set now (VmRSS), in KiB.
	RSSKB int64
	// PeakRSSKB is the largest resident set since the process started or
	// since ResetPeak (VmHWM), in KiB.
	PeakRSSKB int64
}

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on Linux.
const userHZ = 100

// Read reads pid's usage.
func Read(pid int) (Usage, error) {
	var u Usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("procstat: %w", err)
	}
	// The fields after the command, which is in parentheses and may hold
	// spaces: utime is field 14 and stime 15.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return u, fmt.Errorf("procstat: /proc/%d/stat unreadable", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return u, fmt.Errorf("procstat: /proc/%d/stat has %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return u, fmt.Errorf("procstat: %w", err)
	}
	u.CPU = time.Duration(utime+stime) * time.Second / userHZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("procstat: %w", err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			u.RSSKB = kb
		case "VmHWM":
			u.PeakRSSKB = kb
		}
	}
	return u, nil
}

// ResetPeak starts pid's peak resident set again from its current one
// (clear_refs 5), so a long-lived process's peak is a phase's own. It needs
// the right to write the process's /proc files (the same user, or root).
func ResetPeak(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("procstat: reset peak RSS: %w", err)
	}
	return nil
}
