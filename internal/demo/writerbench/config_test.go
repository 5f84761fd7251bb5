package writerbench

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"short duration", func(c *Config) { c.Duration = 10 * time.Millisecond }, "--duration 10ms"},
		{"short rounds", func(c *Config) { c.Duration, c.Rounds = 250*time.Millisecond, 3 }, "--duration 250ms"},
		{"one round", func(c *Config) { c.Duration, c.Rounds = 250*time.Millisecond, 1 }, ""},
		{"no rounds", func(c *Config) { c.Rounds = 0 }, "--rounds 0"},
		{"too many rounds", func(c *Config) { c.Rounds = MaxRounds + 1 }, "--rounds 101"},
		{"no writers", func(c *Config) { c.Writers = nil }, "--writers"},
		{"zero writers", func(c *Config) { c.Writers = []int{1, 0} }, "--writers 0"},
		{"too many writers", func(c *Config) { c.Writers = []int{MaxWriters + 1} }, "--writers 257"},
		{"one writer count", func(c *Config) { c.Writers = []int{4} }, ""},
		{"no modes", func(c *Config) { c.Modes = nil }, "--modes"},
		{"unknown mode", func(c *Config) { c.Modes = []string{"batch", "copy"} }, `--modes "copy"`},
		{"one mode", func(c *Config) { c.Modes = []string{"statements"} }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("want an error naming %q, got %v", tc.want, err)
			}
		})
	}
}

func TestSampleFigures(t *testing.T) {
	var s Sample
	for i := 1; i <= 100; i++ {
		s.Latencies = append(s.Latencies, time.Duration(i)*time.Millisecond)
	}
	s.Transactions, s.Elapsed, s.RoundTrips = 100, 2*time.Second, 400
	s.CPU = CPU{Client: 100 * time.Millisecond, Server: -1}
	if got := s.Quantile(0.5); got != 50*time.Millisecond {
		t.Errorf("p50 %s", got)
	}
	if got := s.Quantile(0.99); got != 99*time.Millisecond {
		t.Errorf("p99 %s", got)
	}
	if got := s.PerSecond(); got != 50 {
		t.Errorf("tx/s %v", got)
	}
	if got := s.RoundTripsPerTx(); got != 4 {
		t.Errorf("round trips per tx %v", got)
	}
	if got := s.CPUPerTx(); got.Client != time.Millisecond || got.Server != -1 {
		t.Errorf("cpu per tx %+v", got)
	}
	if got := (Sample{}).Quantile(0.5); got != 0 {
		t.Errorf("empty p50 %s", got)
	}
}
