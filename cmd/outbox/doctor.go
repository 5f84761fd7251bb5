package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/ops/doctor"
	"github.com/outboxrelay/outbox/relay"
)

// doctorKafkaTimeout bounds doctor's read of the relay's checkpoint.
const doctorKafkaTimeout = 30 * time.Second

// doctorCmd is `outbox doctor`: it prints every readiness check with its fix
// and exits 1 when any check failed, so it can gate a deploy. With --brokers
// it also compares the relay's slot with its Kafka checkpoint and prints the
// repair of a gap.
func doctorCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "doctor", Short: "check that Postgres is ready for the relay and say what to fix", Args: noArgs}
	fs := c.Flags()
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	pub := fs.String("publication", "", "publication the relay reads; defaults to <schema>_events")
	var kc kafkaconn.Config
	kc.Register(fs)
	slot := fs.String("slot", "", "the relay's replication slot, compared with its Kafka checkpoint (with --brokers); defaults to SCHEMA_relay")
	ckptTopic := fs.String("checkpoint-topic", doctor.DefaultCheckpointTopic, "the relay's checkpoint topic (with --brokers)")
	margin := fs.Duration("repair-margin", 10*time.Minute, "the relay's --repair-margin: the printed republish starts this long before the checkpoint's last commit")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if err := requireDatabaseURL(*dbURL); err != nil {
			return err
		}
		opts := doctor.Options{Schema: *schema, Publication: *pub, Slot: *slot, CheckpointTopic: *ckptTopic}
		if len(kc.Brokers) > 0 {
			kopts, err := kc.Opts()
			if err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			opts.Checkpoint = func(ctx context.Context, slot string) (doctor.SlotCheckpoint, bool, error) {
				return readDoctorCheckpoint(ctx, kc, kopts, *ckptTopic, slot, *margin)
			}
		}
		if err := checkPostgres(c.Context(), *dbURL); err != nil {
			return err
		}
		r, err := doctor.Run(ctx, *dbURL, opts)
		if err != nil {
			return err
		}
		fmt.Fprint(e.stdout, r.String())
		if r.Failed() {
			return exitError{code: 1, msg: "some checks failed; see the fixes above"}
		}
		fmt.Fprintln(e.stdout, "all checks passed")
		return nil
	}
	return c
}

// readDoctorCheckpoint reads the relay's checkpoint of slot, bounded by
// doctorKafkaTimeout; a checkpoint topic that does not exist yet holds none.
func readDoctorCheckpoint(ctx context.Context, kc kafkaconn.Config, kopts []kgo.Opt, topic, slot string, margin time.Duration) (doctor.SlotCheckpoint, bool, error) {
	// Check says what is wrong with the connection settings; a bare client
	// would retry a wrong password until the deadline.
	if err := kc.Check(ctx); err != nil {
		return doctor.SlotCheckpoint{}, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, doctorKafkaTimeout)
	defer cancel()
	ck, found, err := relay.ReadCheckpoint(ctx, kopts, topic, slot, margin)
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return doctor.SlotCheckpoint{}, false, nil
	}
	if err != nil || !found {
		return doctor.SlotCheckpoint{}, false, err
	}
	return doctor.SlotCheckpoint{SystemID: ck.SystemID, Timeline: ck.Timeline, ConfirmLSN: ck.ConfirmLSN,
		At: ck.At, RepairSince: ck.RepairSince}, true, nil
}
