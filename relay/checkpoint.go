package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// checkpoint is what the relay writes, keyed by slot name, to the compacted
// checkpoint topic inside every Kafka transaction: how far into the WAL the
// committed data goes.
type checkpoint struct {
	// Slot is the replication slot's name (also the record key).
	Slot string `json:"slot"`
	// SystemID and Timeline identify the Postgres server (IDENTIFY_SYSTEM).
	SystemID string `json:"system_id"`
	Timeline int32  `json:"timeline"`
	// CommitLSN is the commit LSN of the last Postgres transaction with data
	// in Kafka, and Rows how many of its outbox rows are there. Complete says
	// the whole transaction is; otherwise it was split and a restart resumes
	// after row Rows.
	CommitLSN pglogrepl.LSN `json:"-"`
	Rows      int64         `json:"rows"`
	Complete  bool          `json:"complete"`
	// Confirm is the LSN confirmed to Postgres after this commit: the end of
	// the last whole transaction or heartbeat received.
	Confirm pglogrepl.LSN `json:"-"`
	// At is when the Kafka transaction was committed.
	At time.Time `json:"at"`
	// CommitTime is the Postgres commit time of the last transaction (or
	// heartbeat) the checkpoint covers: a gap after it starts no earlier, save
	// for rows of transactions that began before it (Config.RepairMargin).
	CommitTime time.Time `json:"commit_time,omitzero"`

	CommitLSNText string `json:"commit_lsn"`
	ConfirmText   string `json:"confirm_lsn"`
}

func (c *checkpoint) marshal() []byte {
	c.CommitLSNText = c.CommitLSN.String()
	c.ConfirmText = c.Confirm.String()
	b, _ := json.Marshal(c)
	return b
}

func unmarshalCheckpoint(b []byte) (checkpoint, error) {
	var c checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return c, err
	}
	var err error
	if c.CommitLSN, err = pglogrepl.ParseLSN(c.CommitLSNText); err != nil {
		return c, fmt.Errorf("commit_lsn: %w", err)
	}
	if c.Confirm, err = pglogrepl.ParseLSN(c.ConfirmText); err != nil {
		return c, fmt.Errorf("confirm_lsn: %w", err)
	}
	return c, nil
}

// skip reports, for a Postgres transaction with commit LSN lsn, whether it is
// already in Kafka entirely (all) or how many of its leading rows are (rows).
func (c *checkpoint) skip(lsn pglogrepl.LSN) (all bool, rows int64) {
	switch {
	case c.CommitLSN == 0 || lsn > c.CommitLSN:
		return false, 0
	case lsn < c.CommitLSN || c.Complete:
		return true, 0
	default:
		return false, c.Rows
	}
}

// ensureCheckpointTopic creates the checkpoint topic (compacted, one
// partition) when it is missing.
func ensureCheckpointTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("relay: list checkpoint topic %s: %w", topic, err)
	}
	if t, ok := td[topic]; ok && t.Err == nil {
		return nil
	}
	compact := "compact"
	resp, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("relay: create checkpoint topic %s: %w", topic, err)
	}
	// A new topic takes a moment to be served; wait for its offsets.
	for {
		offs, err := adm.ListCommittedOffsets(ctx, topic)
		if err == nil && offs.Error() == nil {
			return nil
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("relay: wait for new checkpoint topic %s: %w", topic, ctx.Err())
		case <-t.C:
		}
	}
}

// readCheckpoint reads the newest committed checkpoint of slot with a
// read_committed consumer up to the last stable offset. Call it only after
// the transactional producer is initialised, so no predecessor can commit
// after the read.
func readCheckpoint(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic, slot string) (checkpoint, bool, error) {
	var none checkpoint
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return none, false, fmt.Errorf("relay: list checkpoint offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return none, false, fmt.Errorf("relay: list checkpoint start offsets: %w", err)
	}
	want := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	var lerr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			lerr = o.Err
			return
		}
		s, _ := starts.Lookup(topic, o.Partition)
		if o.Offset > s.Offset {
			want[o.Partition] = o.Offset
			parts[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if lerr != nil {
		return none, false, fmt.Errorf("relay: checkpoint topic %s: %w", topic, lerr)
	}
	if len(want) == 0 {
		return none, false, nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Commit and abort markers come back too, so the end is always seen.
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return none, false, fmt.Errorf("relay: checkpoint consumer: %w", err)
	}
	defer cl.Close()
	var (
		found bool
		last  checkpoint
		lastO int64 = -1
	)
	seen := map[int32]int64{}
	done := func() bool {
		for p, end := range want {
			if o, ok := seen[p]; !ok || o+1 < end {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return none, false, fmt.Errorf("relay: read checkpoint topic %s: %w", topic, err)
		}
		var ferr error
		fs.EachError(func(_ string, p int32, e error) { ferr = fmt.Errorf("relay: fetch checkpoint %s/%d: %w", topic, p, e) })
		if ferr != nil {
			return none, false, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			seen[r.Partition] = r.Offset
			if r.Attrs.IsControl() || string(r.Key) != slot || r.Offset < lastO {
				return
			}
			c, err := unmarshalCheckpoint(r.Value)
			if err != nil {
				ferr = fmt.Errorf("relay: checkpoint at %s/%d@%d: %w", topic, r.Partition, r.Offset, err)
				return
			}
			last, found, lastO = c, true, r.Offset
		})
		if ferr != nil {
			return none, false, ferr
		}
	}
	return last, found, nil
}

// Checkpoint is what the relay last committed to Kafka for a slot, for tools
// that compare it with the slot (`outbox doctor`).
type Checkpoint struct {
	Slot string
	// SystemID and Timeline identify the Postgres server the relay streamed.
	SystemID string
	Timeline int32
	// CommitLSN is the last Postgres transaction with data in Kafka;
	// ConfirmLSN what the relay confirmed to Postgres after it.
	CommitLSN, ConfirmLSN string
	// At is the Kafka commit time; CommitTime the Postgres commit time of the
	// last transaction or heartbeat covered (zero from older relays).
	At, CommitTime time.Time
	// RepairSince is where a repair after this checkpoint starts: the last
	// commit time less margin (the relay's --repair-margin).
	RepairSince time.Time
}

// ReadCheckpoint reads the newest committed checkpoint of slot from topic,
// read_committed. It fences nothing. found is false when the topic holds none.
func ReadCheckpoint(ctx context.Context, kafkaOpts []kgo.Opt, topic, slot string, margin time.Duration) (Checkpoint, bool, error) {
	cl, err := kgo.NewClient(kafkaOpts...)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("relay: Kafka client: %w", err)
	}
	defer cl.Close()
	c, found, err := readCheckpoint(ctx, kafkaOpts, kadm.NewClient(cl), topic, slot)
	if err != nil || !found {
		return Checkpoint{}, found, err
	}
	return Checkpoint{Slot: c.Slot, SystemID: c.SystemID, Timeline: c.Timeline, CommitLSN: c.CommitLSN.String(),
		ConfirmLSN: c.Confirm.String(), At: c.At, CommitTime: c.CommitTime, RepairSince: c.gapStart().Add(-margin)}, true, nil
}
