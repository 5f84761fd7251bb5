package procstat

import (
	"os"
	"testing"
	"time"
)

func TestReadSelf(t *testing.T) {
	before, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU and touch memory so both figures must move.
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.CPU-before.CPU < 100*time.Millisecond {
		t.Fatalf("CPU moved %s over 300ms of spinning", after.CPU-before.CPU)
	}
	if after.PeakRSSKB < 60<<10 || after.RSSKB <= 0 {
		t.Fatalf("peak RSS %d KiB, RSS %d KiB after touching 64 MiB", after.PeakRSSKB, after.RSSKB)
	}
	_ = buf[len(buf)-1]
	buf = nil
	if err := ResetPeak(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(-1); err == nil {
		t.Fatal("read of pid -1 succeeded")
	}
}
