package relaybench

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
		{"negative events", func(c *Config) { c.Events = -1 }, "--events -1"},
		{"negative payload", func(c *Config) { c.Payload = -1 }, "--payload -1"},
		{"zero payload", func(c *Config) { c.Payload = 0 }, ""},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "--rate -1"},
		{"rate too high", func(c *Config) { c.Rate = MaxRate + 1 }, "--rate 1000001"},
		{"no event offered", func(c *Config) { c.Rate, c.Duration = 10, time.Millisecond }, "--duration 1ms"},
		{"no steady phase, no duration", func(c *Config) { c.Rate, c.Duration = 0, 0 }, ""},
		{"negative huge", func(c *Config) { c.HugeEvents = -1 }, "--huge-events -1"},
		{"negative batch", func(c *Config) { c.MaxBatchEvents = -1 }, "--max-batch-events -1"},
		{"negative linger", func(c *Config) { c.Linger = -time.Millisecond }, "--linger -1ms"},
		{"nothing to do", func(c *Config) { c.Events, c.Rate, c.HugeEvents = 0, 0, 0 }, "nothing to measure"},
		{"bad kafka settings", func(c *Config) { c.Kafka.Brokers, c.Kafka.SASLMechanism = []string{"b:9092"}, "MD5" }, "MD5"},
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
