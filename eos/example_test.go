package eos_test

import (
	"context"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/eos"
)

// A stage that upper-cases payloads from "outbox.note" into "notes.upper".
// Records the transform rejects land on "notes.dlq" in the same transaction.
func ExampleNew() {
	stage, err := eos.New(eos.Config{
		KafkaOpts:       []kgo.Opt{kgo.SeedBrokers("localhost:9092")},
		Group:           "notes-upper",
		InputTopics:     []string{"outbox.note"},
		OutputTopic:     "notes.upper",
		DeadLetterTopic: "notes.dlq",
		TransactionalID: "notes-upper-1", // unique per instance, stable across its restarts
		Transform: func(_ context.Context, r *kgo.Record) ([]*kgo.Record, error) {
			return []*kgo.Record{{Key: r.Key, Value: []byte(strings.ToUpper(string(r.Value))), Headers: r.Headers}}, nil
		},
		Registerer: prometheus.NewRegistry(),
		Logger:     slog.Default(),
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a real program cancels on SIGTERM
	_ = stage.Run(ctx)
}
