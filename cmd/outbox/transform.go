package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/outboxrelay/outbox/eos"
	"github.com/outboxrelay/outbox/eos/orders"
	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/internal/topicspec"
)

// transformFlags are the settings a shipped transform may read.
type transformFlags struct {
	paymentTopic, shippingTopic string
}

// transforms are the transforms the binary ships, by --transform name. Users
// with their own transform import eos as a library.
var transforms = map[string]struct {
	summary string
	build   func(f transformFlags) (eos.TransformFunc, []string)
}{
	"orders": {
		summary: "order.created -> payment.requested (--payment-topic) and shipping.requested (--shipping-topic)",
		build: func(f transformFlags) (eos.TransformFunc, []string) {
			return orders.Transform(orders.Config{PaymentTopic: f.paymentTopic, ShippingTopic: f.shippingTopic}),
				[]string{f.paymentTopic, f.shippingTopic}
		},
	},
}

func transformNames() string {
	names := make([]string, 0, len(transforms))
	for n, t := range transforms {
		names = append(names, n+": "+t.summary)
	}
	sort.Strings(names)
	return strings.Join(names, "; ")
}

// runTransform runs the exactly-once consume-transform-produce stage.
func runTransform(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "transform")
	var kc kafkaconn.Config
	kc.Register(fs)
	host, _ := os.Hostname()
	var (
		group      = fs.String("group", envOr("OUTBOX_TRANSFORM_GROUP", "outbox-transform"), "consumer group (env OUTBOX_TRANSFORM_GROUP)")
		input      = fs.String("input", envOr("OUTBOX_TRANSFORM_INPUT", "outbox.order"), "input topics, comma separated (env OUTBOX_TRANSFORM_INPUT)")
		output     = fs.String("output", envOr("OUTBOX_TRANSFORM_OUTPUT", ""), "default output topic for records the transform does not route (env OUTBOX_TRANSFORM_OUTPUT)")
		dlq        = fs.String("dlq", envOr("OUTBOX_TRANSFORM_DLQ", "outbox.transform.dlq"), "dead-letter topic for rejected records (env OUTBOX_TRANSFORM_DLQ)")
		name       = fs.String("transform", envOr("OUTBOX_TRANSFORM", "orders"), "transform to run: "+transformNames()+" (env OUTBOX_TRANSFORM)")
		stageName  = fs.String("name", envOr("OUTBOX_TRANSFORM_NAME", ""), "stage name in logs, metrics and dead-letter headers; defaults to the group (env OUTBOX_TRANSFORM_NAME)")
		txnID      = fs.String("transactional-id", envOr("OUTBOX_TRANSFORM_TRANSACTIONAL_ID", ""), "transactional id, unique per instance and stable across its restarts; defaults to GROUP-HOSTNAME (env OUTBOX_TRANSFORM_TRANSACTIONAL_ID)")
		payment    = fs.String("payment-topic", envOr("OUTBOX_PAYMENT_TOPIC", "commands.payment"), "orders: topic for payment.requested (env OUTBOX_PAYMENT_TOPIC)")
		shipping   = fs.String("shipping-topic", envOr("OUTBOX_SHIPPING_TOPIC", "commands.shipping"), "orders: topic for shipping.requested (env OUTBOX_SHIPPING_TOPIC)")
		maxRecs    = fs.Int("max-records-per-txn", 1000, "input records per transaction at most")
		txnTimeout = fs.Duration("transaction-timeout", 10*time.Second, "transaction timeout; must be below --session-timeout")
		sessTO     = fs.Duration("session-timeout", 45*time.Second, "consumer group session timeout")
		embedded   = fs.Bool("embedded-kafka", false, "run on an in-process kfake cluster (creates the topics); for trying it out")
		metrics    = fs.String("metrics-addr", envOr("OUTBOX_METRICS_ADDR", ""), "serve /metrics /healthz /readyz on this address, e.g. :9090 (env OUTBOX_METRICS_ADDR)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	t, ok := transforms[*name]
	if !ok {
		return fmt.Errorf("%w: unknown --transform %q; the binary ships: %s", errUsage, *name, transformNames())
	}
	if *txnID == "" {
		*txnID = *group + "-" + host
	}
	inputs := splitList(*input)
	fn, routed := t.build(transformFlags{paymentTopic: *payment, shippingTopic: *shipping})

	if *embedded {
		stopKafka, err := startEmbeddedKafka(ctx, e, &kc, "transform")
		if err != nil {
			return err
		}
		defer stopKafka()
	}
	kopts, err := kc.Opts()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *embedded {
		topics := append(append(append([]string{}, inputs...), routed...), *dlq)
		if *output != "" {
			topics = append(topics, *output)
		}
		specs := make([]topicspec.Spec, len(topics))
		for i, t := range topics {
			specs[i] = topicspec.Spec{Name: t, Partitions: 3, ReplicationFactor: -1}
		}
		if err := ensureTopics(ctx, kopts, specs); err != nil {
			return err
		}
	}

	reg := opsserver.NewRegistry()
	stage, err := eos.New(eos.Config{
		Name:               *stageName,
		KafkaOpts:          kopts,
		Group:              *group,
		InputTopics:        inputs,
		OutputTopic:        *output,
		DeadLetterTopic:    *dlq,
		TransactionalID:    *txnID,
		Transform:          fn,
		MaxRecordsPerTxn:   *maxRecs,
		TransactionTimeout: *txnTimeout,
		SessionTimeout:     *sessTO,
		Logger:             e.logger,
		Registerer:         reg,
	})
	if err != nil {
		if errors.Is(err, eos.ErrInvalidConfig) {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		return err
	}
	stopOps, err := serveOps(e, *metrics, reg, stage.Ready)
	if err != nil {
		return err
	}
	defer stopOps()
	// The stage's own clients retry every Kafka error forever; a setting
	// that can never work (password, certificate) must end the start
	// instead, while an outage is waited out (kafkaconn.Wait).
	if err := kc.Wait(ctx, e.logger); err != nil {
		return err
	}
	if err := stage.Run(ctx); err != nil {
		return err
	}
	return ctx.Err()
}
