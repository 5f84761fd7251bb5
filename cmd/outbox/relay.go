package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/internal/pgconnect"
	"github.com/outboxrelay/outbox/relay"
)

// relayCmd is `outbox relay`: its flags make a relay.Config, and the relay
// runs until SIGTERM/SIGINT, which finishes or aborts the open Kafka
// transaction and confirms only what committed.
func relayCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "relay", Short: "stream the outbox from Postgres into Kafka, exactly once", Args: noArgs}
	fs := c.Flags()
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	var kc kafkaconn.Config
	kc.Register(fs)
	var (
		slot         = fs.String("slot", "", "replication slot; defaults to SCHEMA_relay")
		publication  = fs.String("publication", "", "publication to stream; defaults to SCHEMA_events")
		noCreate     = fs.Bool("no-create", false, "fail instead of creating a missing slot or publication")
		noStandby    = fs.Bool("no-standby", false, "exit when another relay holds the slot instead of waiting as a hot standby")
		acceptSlot   = fs.Bool("accept-slot-position", false, "continue although the slot's position does not match the Kafka checkpoint (events may have been skipped)")
		onSlotLoss   = fs.String("on-slot-loss", relay.SlotLossStop, "when the slot lost WAL, is missing or was recreated (a failover): stop, with the repair commands, or republish: recreate it and repair the gap from the events table exactly once")
		since        = fs.String("since", "", "on a first start (no checkpoint yet), also publish the rows created since then, which were committed before the slot existed: RFC 3339, or a duration ago such as 24h")
		repairMargin = fs.Duration("repair-margin", 10*time.Minute, "a repair also reads rows created this long before the checkpoint's last commit (transactions open across it)")
		txnID        = fs.String("transactional-id", "", "Kafka transactional id, stable per slot; defaults to outbox-relay-SLOT")
		ckptTopic    = fs.String("checkpoint-topic", "outbox.relay.checkpoints", "compacted topic for LSN checkpoints")
		topicTmpl    = fs.String("topic-template", "outbox.{aggregate_type}", "topic for event rows with no topic; {aggregate_type} {event_type} {kind}")
		recordTmpl   = fs.String("record-topic-template", "outbox.{aggregate_type}.records", "compacted topic for record rows with no topic")
		createTopics = fs.Bool("create-topics", false, "create missing routed topics (records compacted, events delete); on by default with --embedded-kafka")
		maxEvents    = fs.Int("max-batch-events", 5000, "close a Kafka transaction at this many events (at a Postgres transaction boundary)")
		maxBytes     = fs.Int("max-batch-bytes", 4<<20, "close a Kafka transaction at this many payload bytes (at a Postgres transaction boundary)")
		maxLatency   = fs.Duration("max-latency", relay.DefaultMaxLatency, "adaptive batching: while more transactions are expected, wait up to this long from an open batch's first event before committing (0: commit as soon as the stream is quiet)")
		linger       = fs.Duration("linger", 0, "a fixed wait instead of the adaptive one: an open batch waits this long from its first event once the stream is quiet")
		splitEvents  = fs.Int("split-events", 50000, "split one Postgres transaction across Kafka transactions every this many events")
		splitBytes   = fs.Int("split-bytes", 32<<20, "split one Postgres transaction across Kafka transactions every this many payload bytes")
		txnTimeout   = fs.Duration("transaction-timeout", 60*time.Second, "Kafka transaction timeout")
		heartbeat    = fs.Duration("heartbeat", 10*time.Second, "interval of pg_logical_emit_message heartbeats")
		shutdown     = fs.Duration("shutdown-timeout", 10*time.Second, "bound on finishing the open Kafka transaction at shutdown")
		pgTimeout    = fs.Duration("postgres-timeout", 60*time.Second, "restart from the slot when Postgres does not answer (connect, a query, a silent replication stream) for this long; not below the server's wal_sender_timeout")
		embedded     = fs.Bool("embedded-kafka", false, "run on an in-process kfake cluster (for trying it without a broker; data is lost on exit)")
		cpuProfile   = fs.String("cpuprofile", "", "write a CPU profile of the run to this file (for outbox bench relay)")
		memProfile   = fs.String("memprofile", "", "write a heap profile to this file at exit (for outbox bench relay)")
		metricsAddr  = metricsAddrFlag(fs)
		consoleAddr  = consoleFlag(fs)
		check        = checkFlag(fs)
		wf           = registerWireFlags(fs, true)
	)
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if err := requireDatabaseURL(*dbURL); err != nil {
			return err
		}
		if *cpuProfile != "" {
			f, err := os.Create(*cpuProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		if *memProfile != "" {
			defer func() {
				if f, err := os.Create(*memProfile); err == nil {
					_ = pprof.Lookup("allocs").WriteTo(f, 0)
					_ = f.Close()
				}
			}()
		}
		if *embedded {
			stopKafka, err := startEmbeddedKafka(ctx, e, &kc, "relay", *check)
			if err != nil {
				return err
			}
			defer stopKafka()
			*createTopics = true
		}
		kopts, err := kc.Opts()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		sinceT, err := parseWhen(*since)
		if err != nil {
			return err
		}
		wire, err := wf.wire()
		if err != nil {
			return err
		}
		reg := opsserver.NewRegistry()
		r, err := relay.New(relay.Config{
			Encoder:               encoder(wire),
			SchemaDeadLetterTopic: *wf.deadLetter,
			DatabaseURL:           *dbURL,
			Schema:                *schema,
			Publication:           *publication,
			Slot:                  *slot,
			NoCreate:              *noCreate,
			NoStandby:             *noStandby,
			AcceptSlotPosition:    *acceptSlot,
			OnSlotLoss:            *onSlotLoss,
			Since:                 sinceT,
			RepairMargin:          *repairMargin,
			KafkaOpts:             kopts,
			TransactionalID:       *txnID,
			TransactionTimeout:    *txnTimeout,
			CheckpointTopic:       *ckptTopic,
			TopicTemplate:         *topicTmpl,
			RecordTopicTemplate:   *recordTmpl,
			CreateTopics:          *createTopics,
			MaxBatchEvents:        *maxEvents,
			MaxBatchBytes:         *maxBytes,
			MaxLatency:            cliMaxLatency(*maxLatency),
			Linger:                *linger,
			SplitEvents:           *splitEvents,
			SplitBytes:            *splitBytes,
			HeartbeatInterval:     *heartbeat,
			PostgresTimeout:       *pgTimeout,
			ShutdownTimeout:       *shutdown,
			Logger:                e.logger,
			Registerer:            reg,
		})
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if *check {
			return printEffective(e.stdout, c, e.sources)
		}
		if err := checkPostgres(ctx, *dbURL, pgconnect.Replication()); err != nil {
			return err
		}
		stopped := e.starting(ctx, c, "database", pgconnect.Redact(*dbURL), "schema", *schema)
		stopOps, err := serveOps(e, *metricsAddr, reg, r.Ready)
		if err != nil {
			return err
		}
		defer stopOps()
		stopConsole, err := startStageConsole(ctx, e, *consoleAddr, *dbURL, *schema, kopts)
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
		err = r.Run(ctx)
		if errors.Is(err, relay.ErrWALLost) || errors.Is(err, relay.ErrSlotMoved) {
			// Loud on purpose: these need an operator.
			e.logger.ErrorContext(ctx, "relay: OPERATOR ACTION NEEDED", "error", err)
		}
		return stopped(ctx, err)
	}
	return c
}

// cliMaxLatency maps --max-latency to relay.Config.MaxLatency, whose zero
// means the default: on the command line 0 says "never wait".
func cliMaxLatency(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
