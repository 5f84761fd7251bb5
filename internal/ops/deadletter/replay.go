package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
)

// Actions of a replay Outcome.
const (
	// ActionReplay produces the record to its origin topic (or the retry tier).
	ActionReplay = "replay"
	// ActionQuarantine produces the record to the quarantine topic because it
	// reached the maximum replay count.
	ActionQuarantine = "quarantine"
	// ActionAlreadyReplayed skips a dead letter the ledger says was replayed.
	ActionAlreadyReplayed = "already_replayed"
	// ActionNoDestination skips a dead letter with no origin topic header when
	// no retry tier was given.
	ActionNoDestination = "no_destination"
)

// ReplayConfig says what to replay and where.
type ReplayConfig struct {
	// Topic is the dead-letter topic. Required.
	Topic string
	// Filter selects the dead letters to replay. Defaults to all.
	Filter Filter
	// To is a retry tier topic to replay into. Defaults to each record's origin
	// topic (the __connect.errors.topic header).
	To string
	// MaxReplays is how many replays a record may have had; one that has had
	// this many goes to QuarantineTopic instead of looping. Defaults to 3.
	MaxReplays int
	// QuarantineTopic receives records past MaxReplays. Defaults to Topic + ".quarantine".
	QuarantineTopic string
	// LedgerTopic is the compacted topic recording which dead letters were
	// replayed, written in the same transaction. Defaults to Topic + ".replayed".
	LedgerTopic string
	// TransactionalID of the replaying producer; stable per dead-letter topic so
	// a rerun fences a crashed replay and aborts its open transaction. Defaults
	// to "outbox-dlq-replay." + Topic.
	TransactionalID string
	// BatchSize is how many records one transaction carries. Defaults to 100.
	BatchSize int
	// Limit caps the number of records replayed or quarantined. Defaults to no cap.
	Limit int
	// Quarantine sends every selected dead letter to QuarantineTopic, whatever
	// its replay count, instead of replaying it: the on-demand form of what
	// MaxReplays does (the console's quarantine action). Like a replay, it
	// writes a replay ledger entry (action "quarantine") in the same
	// transaction, so a later replay reports the letter as already replayed.
	// Defaults to false.
	Quarantine bool
	// DryRun plans without producing anything (and without fencing).
	DryRun bool
	// Progress, if set, is called after each record is handed to the producer,
	// with the count so far and the total planned.
	Progress func(done, total int)
	// Logger receives one line per committed batch. Defaults to slog.Default().
	Logger *slog.Logger
}

// Outcome is what Replay did, or in a dry run would do, with one dead letter.
type Outcome struct {
	// Letter is the dead letter.
	Letter Letter
	// Action is one of the Action constants.
	Action string
	// To is the destination topic for ActionReplay and ActionQuarantine.
	To string
}

// ReplayResult sums up a replay.
type ReplayResult struct {
	// Outcomes of every selected dead letter, in read order. In a failed run,
	// only the outcomes of committed batches count as done.
	Outcomes []Outcome
	// Replayed and Quarantined count records committed (planned, in a dry run).
	Replayed, Quarantined int
	// AlreadyReplayed counts dead letters skipped because the ledger has them.
	AlreadyReplayed int
	// NoDestination counts dead letters skipped for want of an origin topic.
	NoDestination int
}

// ledgerEntry is the value of a replay ledger record.
type ledgerEntry struct {
	Action      string    `json:"action"`
	To          string    `json:"to"`
	EventID     string    `json:"event_id,omitempty"`
	ReplayCount int       `json:"replay_count"`
	At          time.Time `json:"at"`
}

func (c *ReplayConfig) defaults() error {
	if err := envelope.ValidTopic(c.Topic); err != nil {
		return fmt.Errorf("deadletter: dead-letter topic: %w", err)
	}
	if c.MaxReplays <= 0 {
		c.MaxReplays = 3
	}
	if c.QuarantineTopic == "" {
		c.QuarantineTopic = c.Topic + ".quarantine"
	}
	if c.LedgerTopic == "" {
		c.LedgerTopic = c.Topic + ".replayed"
	}
	if c.TransactionalID == "" {
		c.TransactionalID = "outbox-dlq-replay." + c.Topic
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// ledgerKey is the ledger key of a dead letter: "topic/partition/offset".
func ledgerKey(topic string, p Position) string {
	return topic + "/" + strconv.Itoa(int(p.Partition)) + "/" + strconv.FormatInt(p.Offset, 10)
}

// Replay replays the selected dead letters. In order, as the relay does with
// its checkpoint: it initialises the transactional producer (fencing a crashed
// predecessor and aborting its open transaction), reads the replay ledger with
// read_committed, reads the dead-letter topic up to its last stable offset,
// then produces batches of records, each batch in one transaction with its
// ledger entries. A crash at any point leaves every dead letter either
// replayed once (its batch committed) or not at all. A dead-letter topic that
// does not exist is ErrTopicNotFound, found before anything else.
//
// A replayed record keeps the original key, value and headers (event_id
// included, so the sink's ledger skips an event that already succeeded),
// loses the dead-letter headers, and carries HeaderReplayCount one higher and
// HeaderReplayedFrom.
func Replay(ctx context.Context, opts []kgo.Opt, cfg ReplayConfig) (ReplayResult, error) {
	if err := cfg.defaults(); err != nil {
		return ReplayResult{}, err
	}
	// A missing dead-letter topic is the answer, before fencing anything
	// or asking for the ledger.
	if err := checkTopic(ctx, opts, cfg.Topic); err != nil {
		return ReplayResult{}, err
	}
	var prod *kgo.Client
	if !cfg.DryRun {
		var err error
		prod, err = kgo.NewClient(append(append([]kgo.Opt{}, opts...),
			kgo.TransactionalID(cfg.TransactionalID),
			kgo.RecordRetries(10),
		)...)
		if err != nil {
			return ReplayResult{}, fmt.Errorf("deadletter: producer: %w", err)
		}
		defer prod.Close()
		// Fence first, read the ledger second: the other order would let a
		// zombie commit entries after we read them.
		if _, _, err := prod.ProducerID(ctx); err != nil {
			return ReplayResult{}, fmt.Errorf("deadletter: init transactional producer %s: %w", cfg.TransactionalID, err)
		}
	}

	done := map[string]bool{}
	err := Read(ctx, opts, cfg.LedgerTopic, func(r *kgo.Record) error {
		done[string(r.Key)] = r.Value != nil
		return nil
	})
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition) && cfg.DryRun:
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		// Not ErrTopicNotFound, which names the dead-letter topic.
		return ReplayResult{}, &ledgerNotFoundError{cfg.LedgerTopic}
	case err != nil:
		return ReplayResult{}, fmt.Errorf("deadletter: read ledger %s: %w", cfg.LedgerTopic, err)
	}

	var res ReplayResult
	var plan []int // indexes into res.Outcomes of records to produce
	err = List(ctx, opts, cfg.Topic, cfg.Filter, func(l Letter) error {
		o := Outcome{Letter: l}
		switch {
		case done[ledgerKey(cfg.Topic, l.Position())]:
			o.Action = ActionAlreadyReplayed
			res.AlreadyReplayed++
		case cfg.Limit > 0 && len(plan) >= cfg.Limit:
			return nil
		case cfg.Quarantine || l.ReplayCount >= cfg.MaxReplays:
			o.Action, o.To = ActionQuarantine, cfg.QuarantineTopic
		case cfg.To != "":
			o.Action, o.To = ActionReplay, cfg.To
		case l.DeadLetter.OriginTopic != "":
			o.Action, o.To = ActionReplay, l.DeadLetter.OriginTopic
		default:
			o.Action = ActionNoDestination
			res.NoDestination++
		}
		if o.Action == ActionReplay || o.Action == ActionQuarantine {
			plan = append(plan, len(res.Outcomes))
		}
		res.Outcomes = append(res.Outcomes, o)
		return nil
	})
	if errors.Is(err, ErrTopicNotFound) {
		return ReplayResult{}, err // deleted since the check
	}
	if err != nil {
		return ReplayResult{}, fmt.Errorf("deadletter: read %s: %w", cfg.Topic, err)
	}
	if cfg.DryRun {
		for _, i := range plan {
			res.count(res.Outcomes[i].Action)
		}
		return res, nil
	}

	for start := 0; start < len(plan); start += cfg.BatchSize {
		batch := plan[start:min(start+cfg.BatchSize, len(plan))]
		if err := replayBatch(ctx, prod, cfg, res.Outcomes, batch, start, len(plan)); err != nil {
			return res, err
		}
		for _, i := range batch {
			res.count(res.Outcomes[i].Action)
		}
		cfg.Logger.InfoContext(ctx, "deadletter: batch committed", slog.String("topic", cfg.Topic),
			slog.Int("records", len(batch)), slog.Int("done", start+len(batch)), slog.Int("total", len(plan)))
	}
	return res, nil
}

func (r *ReplayResult) count(action string) {
	switch action {
	case ActionReplay:
		r.Replayed++
	case ActionQuarantine:
		r.Quarantined++
	}
}

// replayBatch produces one batch and its ledger entries in one transaction.
func replayBatch(ctx context.Context, prod *kgo.Client, cfg ReplayConfig, outcomes []Outcome, batch []int, doneBefore, total int) (err error) {
	if err := prod.BeginTransaction(); err != nil {
		return fmt.Errorf("deadletter: begin transaction: %w", err)
	}
	var (
		mu       sync.Mutex
		firstErr error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}
	}
	defer func() {
		if err == nil {
			return
		}
		// Abort on a fresh context: ctx may be the reason we stop.
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if aerr := prod.AbortBufferedRecords(actx); aerr != nil {
			err = errors.Join(err, fmt.Errorf("deadletter: abort buffered records: %w", aerr))
			return
		}
		if aerr := prod.EndTransaction(actx, kgo.TryAbort); aerr != nil {
			err = errors.Join(err, fmt.Errorf("deadletter: abort transaction: %w", aerr))
		}
	}()
	now := time.Now().UTC()
	for n, i := range batch {
		o := outcomes[i]
		rec, entry := replayRecord(cfg, o, now)
		prod.Produce(ctx, rec, promise)
		val, jerr := json.Marshal(entry)
		if jerr != nil {
			return fmt.Errorf("deadletter: ledger entry: %w", jerr)
		}
		prod.Produce(ctx, &kgo.Record{Topic: cfg.LedgerTopic, Key: []byte(ledgerKey(cfg.Topic, o.Letter.Position())), Value: val}, promise)
		if cfg.Progress != nil {
			cfg.Progress(doneBefore+n+1, total)
		}
	}
	if err := prod.Flush(ctx); err != nil {
		return fmt.Errorf("deadletter: flush: %w", err)
	}
	mu.Lock()
	perr := firstErr
	mu.Unlock()
	if perr != nil {
		return fmt.Errorf("deadletter: produce: %w", perr)
	}
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("deadletter: commit transaction: %w", err)
	}
	return nil
}

// replayRecord builds the record to produce for an outcome and its ledger entry.
func replayRecord(cfg ReplayConfig, o Outcome, now time.Time) (*kgo.Record, ledgerEntry) {
	src := o.Letter.Record
	from := []byte(ledgerKey(cfg.Topic, o.Letter.Position()))
	rec := &kgo.Record{Topic: o.To, Key: src.Key, Value: src.Value}
	count := o.Letter.ReplayCount
	if o.Action == ActionQuarantine {
		// Keep everything, dead-letter headers included: a person reads it.
		rec.Headers = append(rec.Headers, src.Headers...)
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderReplayedFrom, Value: from})
	} else {
		count++
		for _, h := range src.Headers {
			if !IsDeadLetterHeader(h.Key) {
				rec.Headers = append(rec.Headers, h)
			}
		}
		rec.Headers = append(rec.Headers,
			kgo.RecordHeader{Key: envelope.HeaderReplayCount, Value: []byte(strconv.Itoa(count))},
			kgo.RecordHeader{Key: HeaderReplayedFrom, Value: from})
	}
	return rec, ledgerEntry{Action: o.Action, To: o.To, EventID: o.Letter.EventID, ReplayCount: count, At: now}
}
