package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/eos"
	"github.com/outboxrelay/outbox/eos/orders"
	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/ops/topicspec"
	"github.com/outboxrelay/outbox/internal/opsserver"
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
func transformCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "transform", Short: "consume, transform and produce exactly once (orders -> payment/shipping commands)", Args: noArgs}
	fs := c.Flags()
	var kc kafkaconn.Config
	kc.Register(fs)
	cc := registerClaimCheckFlags(fs)
	wf := registerWireFlags(fs, false)
	// Only the Postgres claim-check store needs the database: the stage
	// itself is Kafka to Kafka, so the URL is a flag of its own and
	// OUTBOX_DATABASE_URL is not read.
	dbURL := fs.String("claim-check-database-url", "", "Postgres URL of the claim-check store, with --claim-check")
	markSecret(fs, "claim-check-database-url")
	schema := schemaFlag(fs)
	host, _ := os.Hostname()
	var (
		group      = fs.String("group", "outbox-transform", "consumer group")
		input      = fs.String("input", "outbox.order", "input topics, comma separated")
		output     = fs.String("output", "", "default output topic for records the transform does not route")
		dlq        = fs.String("dlq", "outbox.transform.dlq", "dead-letter topic for rejected records")
		name       = fs.String("transform", "orders", "transform to run: "+transformNames()+"")
		stageName  = fs.String("name", "", "stage name in logs, metrics and dead-letter headers; defaults to the group")
		txnID      = fs.String("transactional-id", "", "transactional id, unique per instance and stable across its restarts; defaults to GROUP-HOSTNAME")
		payment    = fs.String("payment-topic", "commands.payment", "orders: topic for payment.requested")
		shipping   = fs.String("shipping-topic", "commands.shipping", "orders: topic for shipping.requested")
		maxRecs    = fs.Int("max-records-per-txn", 1000, "input records per transaction at most")
		txnTimeout = fs.Duration("transaction-timeout", 10*time.Second, "transaction timeout; must be below --session-timeout")
		sessTO     = fs.Duration("session-timeout", 45*time.Second, "consumer group session timeout")
		embedded   = fs.Bool("embedded-kafka", false, "run on an in-process kfake cluster (creates the topics); for trying it out")
		metrics    = metricsAddrFlag(fs)
		check      = checkFlag(fs)
		consoleAt  = consoleFlag(fs)
		consoleDB  = fs.String("console-database-url", "", "with --console: the Postgres URL of the outbox and the sink ledger the console reads (the transform itself needs none)")
	)
	markSecret(fs, "console-database-url")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
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
			stopKafka, err := startEmbeddedKafka(ctx, e, &kc, "transform", *check)
			if err != nil {
				return err
			}
			defer stopKafka()
		}
		kopts, err := kc.Opts()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if *embedded && !*check {
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

		wire, err := wf.wire()
		if err != nil {
			return err
		}
		resolver, closeResolver, err := cc.resolver(ctx, *dbURL, *schema)
		if err != nil {
			return err
		}
		defer closeResolver()
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
			ClaimCheck:         resolver,
			Decoder:            decoder(wire),
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
		if *check {
			return printEffective(e.stdout, c, e.sources)
		}
		stopped := e.starting(ctx, c)
		stopOps, err := serveOps(e, *metrics, reg, stage.Ready)
		if err != nil {
			return err
		}
		defer stopOps()
		stopConsole, err := startStageConsole(ctx, e, *consoleAt, *consoleDB, *schema, kopts)
		if err != nil {
			return err
		}
		defer stopConsole()
		// The stage's own clients retry every Kafka error forever; a setting
		// that can never work (password, certificate) must end the start
		// instead, while an outage is waited out (kafkaconn.Wait).
		if err := kc.Wait(ctx, e.logger); err != nil {
			return err
		}
		err = stage.Run(ctx)
		if err == nil {
			err = ctx.Err()
		}
		return stopped(ctx, err)
	}
	return c
}
