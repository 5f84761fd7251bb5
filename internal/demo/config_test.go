package demo

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"zero orders", func(c *Config) { c.Orders = 0 }, "--orders 0"},
		{"negative orders", func(c *Config) { c.Orders = -5 }, "--orders -5"},
		{"one order", func(c *Config) { c.Orders = 1 }, ""},
		{"zero rate", func(c *Config) { c.Rate = 0 }, "--rate 0"},
		{"NaN rate", func(c *Config) { c.Rate = math.NaN() }, "--rate NaN"},
		{"infinite rate", func(c *Config) { c.Rate = math.Inf(1) }, "--rate +Inf"},
		{"no duplicates", func(c *Config) { c.Duplicates = 0 }, ""},
		{"all duplicates", func(c *Config) { c.Duplicates = 1 }, ""},
		{"duplicates above 1", func(c *Config) { c.Duplicates = 1.5 }, "--duplicates 1.5"},
		{"NaN duplicates", func(c *Config) { c.Duplicates = math.NaN() }, "--duplicates NaN"},
		{"zero timeout", func(c *Config) { c.Timeout = 0 }, "--timeout 0s"},
		{"short chaos interval", func(c *Config) { c.Chaos, c.ChaosInterval = true, time.Second }, "--chaos-interval 1s"},
		{"no chaos, zero interval", func(c *Config) { c.ChaosInterval = 0 }, ""},
		{"unknown kafka", func(c *Config) { c.KafkaKind = "redpanda" }, `--kafka "redpanda"`},
		{"kafka and brokers", func(c *Config) { c.KafkaKind, c.Kafka.Brokers = KafkaApache, []string{"b:9092"} }, "--kafka apache starts a broker"},
		{"brokers only", func(c *Config) { c.Kafka.Brokers = []string{"b:9092"} }, ""},
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
	// The zero Config names each field without a usable zero.
	err := Config{}.Validate()
	for _, want := range []string{"--orders 0", "--rate 0", "--timeout 0s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("zero Config: want %q in %v", want, err)
		}
	}
}

func TestNotSettledNamesStagesBehind(t *testing.T) {
	a := &Audit{Stages: []StageCount{
		{Stage: "load", What: "orders accepted", Expected: 10, Seen: 10},
		{Stage: "relay", What: "outbox events in outbox.order", Expected: 10, Seen: 10},
		{Stage: "transform", What: "commands", Expected: 20, Seen: 14},
		{Stage: "sink-payment", What: "commands final in the ledger", Expected: 7, Seen: 3},
	}}
	got := notSettled("did not settle", a.Behind())
	if want := "did not settle; behind: transform 14 of 20 commands; sink-payment 3 of 7 commands final in the ledger"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := notSettled("did not settle", nil); !strings.Contains(got, "every stage had caught up") {
		t.Errorf("nothing behind: %q", got)
	}
}
