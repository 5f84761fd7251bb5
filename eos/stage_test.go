package eos

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
)

func validConfig() Config {
	return Config{
		KafkaOpts:       []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")},
		Group:           "g",
		InputTopics:     []string{"in"},
		OutputTopic:     "out",
		DeadLetterTopic: "dlq",
		TransactionalID: "g-1",
		Transform:       mark,
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	s, err := New(validConfig())
	require.NoError(t, err)
	require.Equal(t, "g", s.cfg.Name, "Name defaults to Group")
	require.Equal(t, 1000, s.cfg.MaxRecordsPerTxn)
	require.Equal(t, 10*time.Second, s.cfg.TransactionTimeout)
	require.Equal(t, 45*time.Second, s.cfg.SessionTimeout)

	for name, mutate := range map[string]func(*Config){
		"no brokers":          func(c *Config) { c.KafkaOpts = nil },
		"no group":            func(c *Config) { c.Group = "" },
		"no input":            func(c *Config) { c.InputTopics = nil },
		"bad input topic":     func(c *Config) { c.InputTopics = []string{"a b"} },
		"no dead letters":     func(c *Config) { c.DeadLetterTopic = "" },
		"no transactional id": func(c *Config) { c.TransactionalID = "" },
		"no transform":        func(c *Config) { c.Transform = nil },
		"input is output":     func(c *Config) { c.OutputTopic = "in" },
		"txn timeout too long": func(c *Config) {
			c.TransactionTimeout, c.SessionTimeout = 30*time.Second, 30*time.Second
		},
		"negative batch": func(c *Config) { c.MaxRecordsPerTxn = -1 },
	} {
		c := validConfig()
		mutate(&c)
		_, err := New(c)
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}
}

func TestMetricsRegisterOncePerName(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := validConfig()
	c.Registerer = reg
	_, err := New(c)
	require.NoError(t, err)
	_, err = New(c)
	require.Error(t, err, "a second stage with the same name on one registry")
	c.Name = "other"
	_, err = New(c)
	require.NoError(t, err, "stages with distinct names share a registry")
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	c := validConfig()
	c.KafkaOpts = k.Opts()
	c.InputTopics = []string{k.Topic("ss-in", 1, nil)}
	c.OutputTopic = k.Topic("ss-out", 1, nil)
	c.DeadLetterTopic = k.Topic("ss-dlq", 1, nil)
	c.Group = "ss-" + c.InputTopics[0]
	s, err := New(c)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, s.Stop(ctx), "Stop before Start")
	require.ErrorIs(t, s.Ready(), ErrNotReady)
	require.NoError(t, s.Start(ctx))
	require.ErrorIs(t, s.Start(ctx), ErrAlreadyStarted)
	require.Eventually(t, func() bool { return s.Ready() == nil }, 10*time.Second, 10*time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	require.NoError(t, s.Stop(sctx))
	require.NoError(t, s.Stop(sctx), "second Stop")
	require.ErrorIs(t, s.Ready(), ErrNotReady)
}
