package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/ops/deadletter"
)

// JourneyView is one order's path: its outbox rows, the Kafka records that
// carry them (and the commands made from them), every sink attempt, and,
// when it has not arrived, where it stands.
type JourneyView struct {
	// Query is what was searched: an order (aggregate) id, event id or
	// correlation id.
	Query string `json:"query"`
	// Events are the outbox rows found, in commit order.
	Events []OutboxEvent `json:"events"`
	// Records are the Kafka records found, in time order.
	Records []RecordView `json:"records"`
	// Ledger is each endpoint's row for the events and commands.
	Ledger []LedgerRow `json:"ledger"`
	// Attempts are every call the sink made, in time order.
	Attempts []Attempt `json:"attempts"`
	// Timeline is all of the above in one time order.
	Timeline []Step `json:"timeline"`
	// TraceIDs are the W3C trace ids the events carry.
	TraceIDs []string `json:"trace_ids"`
	// Stuck says, per event, where it stands when it has not reached an
	// endpoint's success: empty when every event is done.
	Stuck []string `json:"stuck"`
	// Searched are the topics read, with how far.
	Searched []TopicSearch `json:"searched"`
	// Took is how long the search took.
	Took time.Duration `json:"took_ns"`
}

// RecordView is a Kafka record of a journey.
type RecordView struct {
	Topic     string       `json:"topic"`
	Partition int32        `json:"partition"`
	Offset    int64        `json:"offset"`
	Timestamp time.Time    `json:"timestamp"`
	Key       string       `json:"key"`
	EventID   string       `json:"event_id"`
	EventType string       `json:"event_type"`
	Headers   []HeaderView `json:"headers"`
	// Role says what the record is: "event" (relayed from the outbox),
	// "command" (made by the transform from one of the events), "retry" (a
	// retry tier copy) or "dead letter".
	Role string `json:"role"`
}

// TopicSearch is one topic a journey read.
type TopicSearch struct {
	Topic     string `json:"topic"`
	Read      int    `json:"read"`
	Found     int    `json:"found"`
	Truncated bool   `json:"truncated"`
	Error     string `json:"error,omitempty"`
}

// Step is one line of the timeline.
type Step struct {
	At     time.Time `json:"at"`
	Stage  string    `json:"stage"`
	What   string    `json:"what"`
	Status string    `json:"status"`
}

func (s *Server) journey(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.FormValue("q"))
	if q == "" {
		s.render(w, r, http.StatusOK, "journey", "Journey", JourneyView{})
		return
	}
	v, err := s.findJourney(r.Context(), q)
	if err != nil {
		s.fail(w, r, http.StatusBadGateway, err.Error(), "")
		return
	}
	s.render(w, r, http.StatusOK, "journey", "Journey of "+q, v)
}

// findJourney searches Postgres, then Kafka, then the ledger for q.
func (s *Server) findJourney(ctx context.Context, q string) (JourneyView, error) {
	began := time.Now()
	v := JourneyView{Query: q, Records: []RecordView{}, Ledger: []LedgerRow{}, Attempts: []Attempt{}, Timeline: []Step{},
		TraceIDs: []string{}, Stuck: []string{}, Searched: []TopicSearch{}}
	var err error
	if v.Events, err = readJourneyEvents(ctx, s.db, q); err != nil {
		return v, err
	}
	ids := map[string]bool{}
	var since time.Time
	topics := map[string]bool{}
	for _, e := range v.Events {
		ids[e.EventID.String()] = true
		if since.IsZero() || e.CreatedAt.Before(since) {
			since = e.CreatedAt
		}
		for _, t := range routes(e) {
			topics[t] = true
		}
		if tp := e.Headers[envelope.HeaderTraceparent]; tp != "" {
			v.TraceIDs = appendUnique(v.TraceIDs, traceID(tp))
		}
	}
	if _, err := uuid.Parse(q); err == nil {
		ids[q] = true
	}
	for _, t := range s.cfg.JourneyTopics {
		topics[t] = true
	}
	dlqs, err := dlqTopics(ctx, &s.cfg)
	if err != nil {
		v.Searched = append(v.Searched, TopicSearch{Topic: "(dead-letter topics)", Error: err.Error()})
	}
	for _, t := range dlqs {
		topics[t] = true
	}

	// One pass over the topics: the events' own records, the commands
	// caused by them, copies on retry tiers, and dead letters.
	outboxIDs := map[string]bool{}
	for id := range ids {
		outboxIDs[id] = true
	}
	copyRole := func(h map[string]string, topic string) string {
		switch {
		case h[deadletter.HeaderReplayedFrom] != "":
			return "replayed"
		case strings.Contains(topic, ".retry."):
			return "retry"
		}
		return ""
	}
	match := func(rec *kgo.Record) (string, bool) {
		h := headerMap(rec)
		id := h[envelope.HeaderEventID]
		role := copyRole(h, rec.Topic)
		switch {
		case id == "":
			return "", false
		case outboxIDs[id]:
			if role == "" {
				role = "event"
			}
		case ids[h[envelope.HeaderCausationID]] || (h[envelope.HeaderCorrelationID] == q && !ids[id]):
			ids[id] = true
			if role == "" {
				role = "command"
			}
		case ids[id]:
			if role == "" {
				role = "event"
			}
		case string(rec.Key) == q:
			ids[id], outboxIDs[id] = true, true
			if role == "" {
				role = "event"
			}
		default:
			return "", false
		}
		return role, true
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	sort.Strings(names)
	// Commands are found in the second half of a pass by their causation id,
	// so relay topics go first.
	sort.SliceStable(names, func(i, j int) bool { return !isDLQ(names[i], dlqs) && isDLQ(names[j], dlqs) })
	sctx, cancel := context.WithTimeout(ctx, s.cfg.JourneyTimeout)
	defer cancel()
	for _, t := range names {
		recs, ts := s.scanTopic(sctx, t, since, match)
		v.Searched = append(v.Searched, ts)
		for _, rv := range recs {
			if isDLQ(t, dlqs) {
				rv.Role = "dead letter"
			}
			v.Records = append(v.Records, rv)
		}
	}
	sort.SliceStable(v.Records, func(i, j int) bool { return v.Records[i].Timestamp.Before(v.Records[j].Timestamp) })

	var uids []uuid.UUID
	for id := range ids {
		if u, err := uuid.Parse(id); err == nil {
			uids = append(uids, u)
		}
	}
	if len(uids) > 0 {
		if v.Ledger, err = readLedgerRows(ctx, s.db, uids); err != nil {
			return v, err
		}
		if v.Attempts, err = readAttempts(ctx, s.db, uids); err != nil {
			return v, err
		}
	}
	snap, _ := s.sampler.snapshot(ctx)
	v.Timeline = timeline(v)
	v.Stuck = stuck(v, snap)
	v.Took = time.Since(began)
	return v, nil
}

// routes are the topics an outbox row is relayed to: its topic, or the
// relay's default route for its aggregate type, and its fan-out topics.
func routes(e OutboxEvent) []string {
	t := e.Topic
	if t == "" {
		t = envelope.DefaultTopic(e.AggregateType)
		if e.Kind == envelope.KindRecord {
			t += ".records"
		}
	}
	return append([]string{t}, e.FanoutTopics...)
}

func isDLQ(t string, dlqs []string) bool {
	for _, d := range dlqs {
		if d == t {
			return true
		}
	}
	return false
}

// scanTopic reads topic with read_committed from the offsets of since
// (a minute before, for clock skew; the start without since) to the last
// stable offsets, at most JourneyScanLimit records a partition, and returns
// the records match accepts.
func (s *Server) scanTopic(ctx context.Context, topic string, since time.Time, match func(*kgo.Record) (string, bool)) ([]RecordView, TopicSearch) {
	ts := TopicSearch{Topic: topic}
	fail := func(err error) ([]RecordView, TopicSearch) { ts.Error = err.Error(); return nil, ts }
	adm, err := kgo.NewClient(s.cfg.KafkaOpts...)
	if err != nil {
		return fail(err)
	}
	defer adm.Close()
	ka := kadm.NewClient(adm)
	ends, err := ka.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return fail(err)
	}
	if o, ok := ends.Lookup(topic, -1); ok && o.Err != nil {
		return fail(o.Err)
	}
	var starts kadm.ListedOffsets
	if since.IsZero() {
		starts, err = ka.ListStartOffsets(ctx, topic)
	} else {
		starts, err = ka.ListOffsetsAfterMilli(ctx, since.Add(-time.Minute).UnixMilli(), topic)
	}
	if err != nil {
		return fail(err)
	}
	parts := map[int32]kgo.Offset{}
	end := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		start := int64(0)
		if st, ok := starts.Lookup(topic, o.Partition); ok && st.Err == nil && st.Offset >= 0 {
			start = st.Offset
		}
		if lo := o.Offset - int64(s.cfg.JourneyScanLimit); start < lo {
			start, ts.Truncated = lo, true
		}
		if o.Offset > start {
			parts[o.Partition] = kgo.NewOffset().At(start)
			end[o.Partition] = o.Offset
		}
	})
	if len(parts) == 0 {
		return nil, ts
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, s.cfg.KafkaOpts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// With the commit markers kept, a partition's end is seen exactly
		// instead of after a quiet poll.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		return fail(err)
	}
	defer cl.Close()
	var out []RecordView
	for len(end) > 0 {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			ts.Truncated = true
			break
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = err
			}
		})
		if ferr != nil {
			return fail(fmt.Errorf("console: read %s: %w", topic, ferr))
		}
		n := 0
		fs.EachRecord(func(rec *kgo.Record) {
			e, ok := end[rec.Partition]
			if !ok || rec.Offset >= e {
				return
			}
			n++
			if !rec.Attrs.IsControl() {
				ts.Read++
				if role, ok := match(rec); ok {
					out = append(out, recordView(rec, role))
					ts.Found++
				}
			}
			if rec.Offset >= e-1 {
				delete(end, rec.Partition)
			}
		})
		if n == 0 {
			break // a quiet poll: what is left below the ends is not coming
		}
	}
	return out, ts
}

func headerMap(r *kgo.Record) map[string]string {
	m := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func recordView(r *kgo.Record, role string) RecordView {
	v := RecordView{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UTC(), Key: printable(r.Key), Role: role}
	for _, h := range r.Headers {
		switch h.Key {
		case envelope.HeaderEventID:
			v.EventID = string(h.Value)
		case envelope.HeaderEventType:
			v.EventType = string(h.Value)
		}
		v.Headers = append(v.Headers, HeaderView{Key: h.Key, Value: printable(h.Value), DeadLetter: deadletter.IsDeadLetterHeader(h.Key)})
	}
	return v
}

// traceID is the trace id of a W3C traceparent ("00-TRACE-SPAN-01").
func traceID(tp string) string {
	parts := strings.Split(tp, "-")
	if len(parts) >= 2 {
		return parts[1]
	}
	return tp
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// timeline folds the journey into one time order.
func timeline(v JourneyView) []Step {
	steps := []Step{}
	for _, e := range v.Events {
		steps = append(steps, Step{At: e.CreatedAt, Stage: "outbox",
			What:   fmt.Sprintf("%s %s (%s %s) committed in transaction %d", e.EventType, e.EventID, e.AggregateType, e.AggregateID, e.XID),
			Status: "ok"})
	}
	for _, r := range v.Records {
		st := "ok"
		if r.Role == "dead letter" {
			st = "err"
		}
		steps = append(steps, Step{At: r.Timestamp, Stage: "kafka",
			What:   fmt.Sprintf("%s %s on %s/%d@%d", r.Role, r.EventID, r.Topic, r.Partition, r.Offset),
			Status: st})
	}
	for _, a := range v.Attempts {
		code := "-"
		if a.StatusCode != nil {
			code = fmt.Sprint(*a.StatusCode)
		}
		lat := "-"
		if a.LatencyMS != nil {
			lat = fmt.Sprintf("%dms", *a.LatencyMS)
		}
		steps = append(steps, Step{At: a.StartedAt, Stage: "sink " + a.Endpoint,
			What:   fmt.Sprintf("attempt %d for %s: %s, HTTP %s in %s", a.N, a.EventID, a.Outcome, code, lat),
			Status: statusClass(a.Outcome)})
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].At.Before(steps[j].At) })
	return steps
}

// stuck says where each event of the journey stands when it is not done.
func stuck(v JourneyView, snap *Snapshot) []string {
	out := []string{}
	relayed := map[string]RecordView{}
	for _, r := range v.Records {
		if r.Role == "event" {
			relayed[r.EventID] = r
		}
	}
	ledger := map[string][]LedgerRow{}
	for _, l := range v.Ledger {
		ledger[l.EventID.String()] = append(ledger[l.EventID.String()], l)
	}
	for _, e := range v.Events {
		id := e.EventID.String()
		rec, ok := relayed[id]
		if !ok {
			out = append(out, fmt.Sprintf("event %s is in the outbox but not in %s: waiting for the relay (%s)", id, strings.Join(routes(e), ", "), relayState(snap)))
			continue
		}
		if rows := ledger[id]; len(rows) > 0 {
			for _, l := range rows {
				if why := ledgerStuck(l); why != "" {
					out = append(out, why)
				}
			}
			continue
		}
		if why := groupsBehind(snap, rec); why != "" {
			out = append(out, fmt.Sprintf("event %s is on %s/%d@%d and not yet consumed: %s", id, rec.Topic, rec.Partition, rec.Offset, why))
		}
	}
	// Commands: their ledger rows say where they stand.
	for _, r := range v.Records {
		if r.Role != "command" {
			continue
		}
		rows := ledger[r.EventID]
		for _, l := range rows {
			if why := ledgerStuck(l); why != "" {
				out = append(out, why)
			}
		}
		if len(rows) == 0 {
			if why := groupsBehind(snap, r); why != "" {
				out = append(out, fmt.Sprintf("command %s on %s/%d@%d is not yet consumed: %s", r.EventID, r.Topic, r.Partition, r.Offset, why))
			}
		}
	}
	return out
}

// ledgerStuck says why a ledger row is not done, or "".
func ledgerStuck(l LedgerRow) string {
	why := fmt.Sprintf("event %s at endpoint %s is %s after %d attempt(s)", l.EventID, l.Endpoint, l.Status, l.Attempts)
	if l.LastStatusCode != nil {
		why += fmt.Sprintf(", last HTTP %d", *l.LastStatusCode)
	}
	if l.LastError != nil && *l.LastError != "" {
		why += ": " + *l.LastError
	}
	switch l.Status {
	case "succeeded":
		return ""
	case "retrying":
		if l.NextAttemptAt != nil {
			why += "; next attempt " + fmtTime(*l.NextAttemptAt)
		}
	case "dead_lettered":
		why += "; see the dead letters, replay it from there"
	case "unknown":
		why += "; awaiting reconciliation (the call may have landed)"
	}
	return why
}

// groupsBehind names the groups whose committed offset on rec's partition
// is at or below rec, from the last pipeline sample.
func groupsBehind(snap *Snapshot, rec RecordView) string {
	if snap == nil {
		return "no pipeline sample yet"
	}
	var why []string
	for _, g := range snap.Lag.Groups {
		for _, p := range g.Partitions {
			if p.Topic == rec.Topic && p.Partition == rec.Partition && p.Committed <= rec.Offset {
				why = append(why, fmt.Sprintf("group %s is %s with %d member(s), committed offset %d", g.Group, g.StatusLabel(), g.Members, p.Committed))
			}
		}
	}
	if len(why) == 0 {
		return ""
	}
	return strings.Join(why, "; ")
}

// relayState sums up the slots for a not-yet-relayed event.
func relayState(snap *Snapshot) string {
	if snap == nil || len(snap.Slots) == 0 {
		return "no replication slot in this database: is a relay deployed?"
	}
	var parts []string
	for _, sl := range snap.Slots {
		if sl.Active {
			parts = append(parts, fmt.Sprintf("slot %s held by pid %d, confirmed %s behind", sl.Name, sl.ActivePID, bytesHuman(sl.ConfirmedLag)))
		} else {
			parts = append(parts, fmt.Sprintf("slot %s has no relay attached, %s retained", sl.Name, bytesHuman(sl.RetainedBytes)))
		}
	}
	return strings.Join(parts, "; ")
}
