package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
)

// A gap (rows committed before the slot existed, a slot whose WAL was
// removed, a slot lost in a failover) is repaired from the events table: the
// rows of the window are read in one snapshot, the event ids the target
// topics already hold are read read_committed, and only the missing copies are
// produced, inside Kafka transactions of a fenced producer. What decides
// "missing" is Kafka itself, so a repeated or crashed run never duplicates:
// its successor's InitProducerID resolves the predecessor's last transaction
// before the topics are read.

// repairCols is where the repair queries put the events table's columns; the
// same binary encodings as pgoutput's, so router.records decodes both.
var repairCols = &columns{eventID: 0, aggregateType: 1, aggregateID: 2, eventType: 3, topic: 4, fanout: 5, kind: 6,
	contentType: 7, payload: 8, headers: 9, occurredAt: 10}

// repairWindow selects the rows a repair considers.
type repairWindow struct {
	since, until   time.Time // created_at in [since, until); until zero: no upper bound
	aggregateTypes []string
	eventIDs       []uuid.UUID
}

// planRow is one outbox row of the window: its id, where it goes, and which
// of those topics already hold it.
type planRow struct {
	id        uuid.UUID
	aggType   string
	aggID     string
	createdAt time.Time
	topics    []string
	present   []bool
}

func (p *planRow) missing() bool {
	for _, ok := range p.present {
		if !ok {
			return true
		}
	}
	return false
}

// repairPlan is what a repair found: every row of the window and the topics
// it scanned.
type repairPlan struct {
	rows    []*planRow
	byID    map[uuid.UUID]*planRow
	topics  map[string]bool
	records int // copies the rows become (topic plus fan-out)
	inKafka int // copies already in Kafka
}

// missingRows returns the rows with at least one copy missing, in event_id order.
func (p *repairPlan) missingRows() []*planRow {
	var out []*planRow
	for _, r := range p.rows {
		if r.missing() {
			out = append(out, r)
		}
	}
	return out
}

// repairer runs one repair. tx is a REPEATABLE READ transaction whose snapshot
// decides which rows exist; cl is an initialised transactional producer (its
// InitProducerID has fenced every earlier writer with the same id).
type repairer struct {
	schema  string
	rt      *router
	opts    []kgo.Opt // to build the read_committed scanner
	cl      *kgo.Client
	log     *slog.Logger
	margin  time.Duration // how far before since the Kafka scan starts
	batch   int           // records per Kafka transaction
	create  bool          // create a missing target topic instead of failing
	now     func() time.Time
	onBatch func(published int) // progress
	hooks   repairHooks
}

// repairHooks let crash tests stop the process inside a repair.
type repairHooks struct {
	// afterCommit runs after the n-th Kafka transaction of a repair commits.
	afterCommit func(n int)
}

func (w repairWindow) where() (string, []any) {
	conds := []string{"created_at >= $1"}
	args := []any{w.since}
	if !w.until.IsZero() {
		args = append(args, w.until)
		conds = append(conds, fmt.Sprintf("created_at < $%d", len(args)))
	}
	if len(w.aggregateTypes) > 0 {
		args = append(args, w.aggregateTypes)
		conds = append(conds, fmt.Sprintf("aggregate_type = ANY($%d::text[])", len(args)))
	}
	if len(w.eventIDs) > 0 {
		args = append(args, w.eventIDs)
		conds = append(conds, fmt.Sprintf("event_id = ANY($%d::uuid[])", len(args)))
	}
	return strings.Join(conds, " AND "), args
}

// rowSelect is the select list in repairCols order, with xmin and created_at
// after it. Without payloads when the plan only routes.
func rowSelect(withPayload bool) string {
	payload, headers := "payload", "headers"
	if !withPayload {
		payload, headers = "''::bytea", "'{}'::jsonb"
	}
	return "event_id, aggregate_type, aggregate_id, event_type, topic, fanout_topics, kind, content_type, " +
		payload + ", " + headers + ", occurred_at, xmin, created_at"
}

// binaryFormats asks for every column in binary, the encoding router.records reads.
var binaryFormats = pgx.QueryResultFormats{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}

// plan reads the window's rows (ids and routing) and marks the copies the
// target topics already hold.
func (rp *repairer) plan(ctx context.Context, tx pgx.Tx, w repairWindow) (*repairPlan, error) {
	where, args := w.where()
	q := "SELECT " + rowSelect(false) + " FROM " + pgx.Identifier{rp.schema, "events"}.Sanitize() + " WHERE " + where + " ORDER BY event_id"
	rows, err := tx.Query(ctx, q, append([]any{binaryFormats}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("relay: repair: read outbox rows: %w", err)
	}
	defer rows.Close()
	p := &repairPlan{byID: map[uuid.UUID]*planRow{}, topics: map[string]bool{}}
	var cols []column
	src := &txSource{}
	for rows.Next() {
		raw := rows.RawValues()
		cols = cols[:0]
		for _, v := range raw {
			cols = append(cols, column{kind: pglogrepl.TupleDataTypeBinary, data: v})
		}
		recs, _, err := rp.rt.records(ctx, repairCols, cols, src)
		if err != nil {
			return nil, fmt.Errorf("relay: repair: %w", err)
		}
		id, err := uuid.FromBytes(raw[0])
		if err != nil {
			return nil, fmt.Errorf("relay: repair: event_id: %w", err)
		}
		r := &planRow{id: id, aggType: string(raw[1]), aggID: string(raw[2]), createdAt: pgTime(raw[12])}
		for _, rec := range recs {
			r.topics = append(r.topics, rec.Topic)
			r.present = append(r.present, false)
			p.topics[rec.Topic] = true
		}
		p.records += len(recs)
		p.rows = append(p.rows, r)
		p.byID[id] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("relay: repair: read outbox rows: %w", err)
	}
	if len(p.rows) == 0 {
		return p, nil
	}
	if err := rp.scan(ctx, p, w.since.Add(-rp.margin)); err != nil {
		return nil, err
	}
	return p, nil
}

func pgTime(b []byte) time.Time {
	if len(b) != 8 {
		return time.Time{}
	}
	us := int64(binary.BigEndian.Uint64(b))
	return pgEpoch.Add(time.Duration(us) * time.Microsecond)
}

// scan reads the plan's topics read_committed from the offsets of from to
// their end and marks every copy it finds. The end is the high watermark
// listed now: the scanner waits for open transactions below it to end, so a
// copy committed before the repair began is always seen.
func (rp *repairer) scan(ctx context.Context, p *repairPlan, from time.Time) error {
	adm := kadm.NewClient(rp.cl)
	topics := make([]string, 0, len(p.topics))
	for t := range p.topics {
		topics = append(topics, t)
	}
	td, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("relay: repair: list topics: %w", err)
	}
	var missing []string
	for _, t := range topics {
		if d, ok := td[t]; !ok || d.Err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		if !rp.create {
			return fmt.Errorf("relay: repair: %w: %s (create them with `outbox topics apply`, or let the relay create topics)", ErrUnknownTopic, strings.Join(missing, ", "))
		}
		present := topics[:0]
		for _, t := range topics {
			if d, ok := td[t]; ok && d.Err == nil {
				present = append(present, t)
			}
		}
		topics = present
	}
	if len(topics) == 0 {
		return nil
	}
	starts, err := adm.ListOffsetsAfterMilli(ctx, from.UnixMilli(), topics...)
	if err != nil {
		return fmt.Errorf("relay: repair: list offsets after %s: %w", from.Format(time.RFC3339), err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("relay: repair: list end offsets: %w", err)
	}
	parts := map[string]map[int32]kgo.Offset{}
	want := map[string]map[int32]int64{}
	var lerr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			lerr = fmt.Errorf("relay: repair: end offset of %s/%d: %w", o.Topic, o.Partition, o.Err)
			return
		}
		s, ok := starts.Lookup(o.Topic, o.Partition)
		start := o.Offset
		if ok && s.Err == nil && s.Offset >= 0 {
			start = s.Offset
		}
		if start >= o.Offset {
			return
		}
		if parts[o.Topic] == nil {
			parts[o.Topic], want[o.Topic] = map[int32]kgo.Offset{}, map[int32]int64{}
		}
		parts[o.Topic][o.Partition] = kgo.NewOffset().At(start)
		want[o.Topic][o.Partition] = o.Offset
	})
	if lerr != nil {
		return lerr
	}
	if len(parts) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, rp.opts...),
		kgo.ConsumePartitions(parts),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return fmt.Errorf("relay: repair: scanner: %w", err)
	}
	defer cl.Close()
	left := 0
	for _, ps := range want {
		left += len(ps)
	}
	topicIdx := func(r *planRow, topic string) int {
		for i, t := range r.topics {
			if t == topic {
				return i
			}
		}
		return -1
	}
	for left > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("relay: repair: scan topics: %w", err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, e error) { ferr = fmt.Errorf("relay: repair: fetch %s/%d: %w", t, p, e) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(rec *kgo.Record) {
			end, ok := want[rec.Topic][rec.Partition]
			if !ok {
				return
			}
			if rec.Offset+1 >= end {
				delete(want[rec.Topic], rec.Partition)
				left--
			}
			if rec.Attrs.IsControl() {
				return
			}
			for _, h := range rec.Headers {
				if h.Key != envelope.HeaderEventID {
					continue
				}
				id, err := uuid.ParseBytes(h.Value)
				if err != nil {
					return
				}
				if r := p.byID[id]; r != nil {
					if i := topicIdx(r, rec.Topic); i >= 0 && !r.present[i] {
						r.present[i] = true
						p.inKafka++
					}
				}
				return
			}
		})
	}
	return nil
}

// publish produces the plan's missing copies in event_id order, about batch
// records a transaction, reading their payloads in tx's snapshot. extra gives
// the records to add to each transaction (checkpoints); last says it is the
// final one, which is committed even with no missing copy when extra gives
// records for it. It returns the copies produced and the transactions
// committed.
func (rp *repairer) publish(ctx context.Context, tx pgx.Tx, p *repairPlan, extra func(last bool, lastID uuid.UUID, published int) []*kgo.Record) (published, txns int, err error) {
	missing := p.missingRows()
	stamp := []byte(rp.now().UTC().Format(time.RFC3339Nano))
	var (
		lastID  uuid.UUID
		open    bool
		inTx    int
		prodErr error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil && prodErr == nil {
			prodErr = err
		}
	}
	begin := func() error {
		if open {
			return nil
		}
		if err := rp.cl.BeginTransaction(); err != nil {
			return fmt.Errorf("relay: repair: begin Kafka transaction: %w", err)
		}
		open = true
		return nil
	}
	commit := func(last bool) error {
		recs := extra(last, lastID, published)
		if !open && len(recs) == 0 {
			return nil
		}
		if err := begin(); err != nil {
			return err
		}
		for _, rec := range recs {
			rp.cl.Produce(ctx, rec, promise)
		}
		err := rp.cl.Flush(ctx)
		if err == nil {
			err = prodErr
		}
		if err != nil {
			rp.abort()
			return fmt.Errorf("relay: repair: produce: %w", err)
		}
		if err := rp.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			return fmt.Errorf("relay: repair: commit Kafka transaction (outcome unknown; run again, it publishes only what is missing): %w", err)
		}
		open, inTx = false, 0
		txns++
		if rp.hooks.afterCommit != nil {
			rp.hooks.afterCommit(txns)
		}
		if rp.onBatch != nil {
			rp.onBatch(published)
		}
		return nil
	}
	const chunk = 500
	for start := 0; start < len(missing); start += chunk {
		part := missing[start:min(start+chunk, len(missing))]
		ids := make([]uuid.UUID, len(part))
		for i, r := range part {
			ids[i] = r.id
		}
		if err := begin(); err != nil {
			return published, txns, err
		}
		n, last, err := rp.produceRows(ctx, tx, p, ids, stamp, promise)
		published += n
		inTx += n
		if last != (uuid.UUID{}) {
			lastID = last
		}
		if err != nil {
			rp.abort()
			return published, txns, err
		}
		if inTx >= rp.batch {
			if err := commit(false); err != nil {
				return published, txns, err
			}
		}
	}
	if err := commit(true); err != nil {
		return published, txns, err
	}
	return published, txns, nil
}

// produceRows reads the rows ids (in the snapshot of tx) and produces their
// missing copies into the open transaction, marked as republished.
func (rp *repairer) produceRows(ctx context.Context, tx pgx.Tx, p *repairPlan, ids []uuid.UUID, stamp []byte, promise func(*kgo.Record, error)) (int, uuid.UUID, error) {
	var lastID uuid.UUID
	q := "SELECT " + rowSelect(true) + " FROM " + pgx.Identifier{rp.schema, "events"}.Sanitize() + " WHERE event_id = ANY($1::uuid[]) ORDER BY event_id"
	rows, err := tx.Query(ctx, q, binaryFormats, ids)
	if err != nil {
		return 0, lastID, fmt.Errorf("relay: repair: read outbox rows: %w", err)
	}
	defer rows.Close()
	n := 0
	var cols []column
	for rows.Next() {
		raw := rows.RawValues()
		cols = cols[:0]
		for _, v := range raw {
			cols = append(cols, column{kind: pglogrepl.TupleDataTypeBinary, data: v})
		}
		var xid uint32
		if len(raw[11]) == 4 {
			xid = binary.BigEndian.Uint32(raw[11])
		}
		recs, _, err := rp.rt.records(ctx, repairCols, cols, &txSource{xidText: strconv.AppendUint(nil, uint64(xid), 10)})
		if err != nil {
			return n, lastID, fmt.Errorf("relay: repair: %w", err)
		}
		id, err := uuid.FromBytes(raw[0])
		if err != nil {
			return n, lastID, fmt.Errorf("relay: repair: event_id: %w", err)
		}
		pr := p.byID[id]
		if pr == nil {
			continue
		}
		for _, rec := range recs {
			i := slices.Index(pr.topics, rec.Topic)
			if i < 0 || pr.present[i] {
				continue
			}
			rec.Headers = append(rec.Headers[:len(rec.Headers):len(rec.Headers)], kgo.RecordHeader{Key: envelope.HeaderRepublished, Value: stamp})
			if rp.create {
				if _, err := ensureTopic(ctx, rp.cl, rec); err != nil {
					return n, lastID, err
				}
			}
			rp.cl.Produce(ctx, rec, promise)
			n++
		}
		lastID = id
	}
	if err := rows.Err(); err != nil {
		return n, lastID, fmt.Errorf("relay: repair: read outbox rows: %w", err)
	}
	return n, lastID, nil
}

func (rp *repairer) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rp.cl.AbortBufferedRecords(ctx); err == nil {
		_ = rp.cl.EndTransaction(ctx, kgo.TryAbort)
	}
}

// ensureTopic creates rec's topic when missing: compacted for records,
// delete retention for events.
func ensureTopic(ctx context.Context, cl *kgo.Client, rec *kgo.Record) (created bool, err error) {
	adm := kadm.NewClient(cl)
	td, err := adm.ListTopics(ctx, rec.Topic)
	if err != nil {
		return false, fmt.Errorf("relay: look up topic %s: %w", rec.Topic, err)
	}
	if t, ok := td[rec.Topic]; ok && t.Err == nil {
		return false, nil
	}
	policy := "delete"
	for _, h := range rec.Headers {
		if h.Key == envelope.HeaderKind && string(h.Value) == envelope.KindRecord {
			policy = "compact"
		}
	}
	resp, err := adm.CreateTopic(ctx, -1, -1, map[string]*string{"cleanup.policy": &policy}, rec.Topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return false, fmt.Errorf("relay: create topic %s: %w", rec.Topic, err)
	}
	return true, nil
}
