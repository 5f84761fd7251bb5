package writerbench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// CPU is processor time used, user and system together, by this process
// (the writers: pgx, the outbox library) and by the Postgres server.
type CPU struct {
	Client time.Duration
	// Server is the postmaster's and all its processes' (backends, WAL
	// writer, checkpointer, autovacuum); -1 when the server's processes
	// cannot be read (another machine, or no /proc).
	Server time.Duration
}

// clockTick is the unit of /proc's times: USER_HZ, 100 on every Linux.
const clockTick = 10 * time.Millisecond

// cpuMeter reads the CPU time of this process and of a local server.
type cpuMeter struct{ postmaster int }

// newCPUMeter finds the postmaster of conn's server when it runs on this
// machine: the parent of conn's backend process.
func newCPUMeter(ctx context.Context, conn *pgx.Conn) cpuMeter {
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return cpuMeter{}
	}
	f, err := procStat(backend)
	if err != nil || len(f) < 2 {
		return cpuMeter{}
	}
	pm, err := strconv.Atoi(f[1])
	if err != nil {
		return cpuMeter{}
	}
	if cmd, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pm), "cmdline")); err != nil || !strings.Contains(string(cmd), "postgres") {
		return cpuMeter{}
	}
	return cpuMeter{postmaster: pm}
}

func (m cpuMeter) read() CPU {
	c := CPU{Server: -1}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.Client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if m.postmaster == 0 {
		return c
	}
	// The postmaster's own time and that of its children that have exited
	// (cutime, cstime), plus its live children's.
	f, err := procStat(m.postmaster)
	if err != nil || len(f) < 15 {
		return c
	}
	ticks := atoi(f[11]) + atoi(f[12]) + atoi(f[13]) + atoi(f[14])
	entries, _ := os.ReadDir("/proc")
	parent := strconv.Itoa(m.postmaster)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := procStat(pid); err == nil && len(f) >= 13 && f[1] == parent {
			ticks += atoi(f[11]) + atoi(f[12])
		}
	}
	c.Server = time.Duration(ticks) * clockTick
	return c
}

// procStat is /proc/PID/stat's fields after the command name: state, ppid,
// ... (so utime is [11], stime [12], cutime [13], cstime [14]).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, os.ErrInvalid
	}
	return strings.Fields(s[i+1:]), nil
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
