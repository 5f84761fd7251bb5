package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outboxrelay/outbox/internal/ops/deadletter"
)

// dlqListLimit is how many dead letters a page lists unless ?limit= says.
const dlqListLimit = 200

// DLQListView is the dead-letter page: `outbox dlq list` with its filters.
type DLQListView struct {
	// Topic is the dead-letter topic listed.
	Topic string `json:"topic"`
	// Topics are the known dead-letter topics, for the chooser.
	Topics []string `json:"topics"`
	// Query holds the filter as given, for the form and the replay.
	Query DLQQuery `json:"filter"`
	// Letters are the dead letters the filter selects, up to Limit.
	Letters []LetterView `json:"letters"`
	// Truncated is true when more letters matched than Limit.
	Truncated bool `json:"truncated"`
}

// DLQQuery is the filter of `outbox dlq list`, as form values.
type DLQQuery struct {
	Topic       string `json:"topic"`
	OriginTopic string `json:"origin_topic,omitempty"`
	Error       string `json:"error,omitempty"`
	Key         string `json:"key,omitempty"`
	Since       string `json:"since,omitempty"`
	Until       string `json:"until,omitempty"`
	At          string `json:"at,omitempty"`
	Limit       int    `json:"limit"`
}

// LetterView is one dead letter, named like `outbox dlq list --json`.
type LetterView struct {
	Partition   int32             `json:"partition"`
	Offset      int64             `json:"offset"`
	Position    string            `json:"position"`
	Timestamp   time.Time         `json:"timestamp"`
	Key         string            `json:"key"`
	EventID     string            `json:"event_id"`
	ReplayCount int               `json:"replay_count"`
	DeadLetter  DeadLetterView    `json:"dead_letter"`
	Headers     []HeaderView      `json:"headers,omitempty"`
	Value       string            `json:"value,omitempty"`
	Extra       map[string]string `json:"-"`
}

// DeadLetterView is the decoded dead-letter headers, as `outbox dlq list
// --json` prints them.
type DeadLetterView = deadletter.HeadersView

// HeaderView is one record header, decoded.
type HeaderView struct {
	Key        string `json:"key"`
	Value      string `json:"value"`
	DeadLetter bool   `json:"dead_letter"`
}

func letterView(l deadletter.Letter, full bool) LetterView {
	v := LetterView{Partition: l.Record.Partition, Offset: l.Record.Offset, Position: l.Position().String(),
		Timestamp: l.Record.Timestamp.UTC(), Key: printable(l.Record.Key), EventID: l.EventID, ReplayCount: l.ReplayCount,
		DeadLetter: l.View()}
	if full {
		for _, h := range l.Record.Headers {
			v.Headers = append(v.Headers, HeaderView{Key: h.Key, Value: printable(h.Value), DeadLetter: deadletter.IsDeadLetterHeader(h.Key)})
		}
		v.Value = printable(l.Record.Value)
	}
	return v
}

// dlqQuery reads the filter form; a missing topic is the only known one.
func (s *Server) dlqQuery(ctx context.Context, r *http.Request) (DLQQuery, []string, error) {
	q := DLQQuery{Topic: r.FormValue("topic"), OriginTopic: r.FormValue("origin-topic"), Error: r.FormValue("error"),
		Key: r.FormValue("key"), Since: r.FormValue("since"), Until: r.FormValue("until"), Limit: dlqListLimit}
	q.At = strings.Join(r.Form["at"], ",")
	if l := r.FormValue("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return q, nil, fmt.Errorf("limit %q: want a whole number (0: all)", l)
		}
		q.Limit = n
	}
	topics, err := dlqTopics(ctx, &s.cfg)
	if err != nil {
		return q, nil, err
	}
	if q.Topic == "" && len(topics) > 0 {
		q.Topic = topics[0]
	}
	return q, topics, nil
}

// filter is the deadletter.Filter of the query, parsed as `outbox dlq` does.
func (q DLQQuery) filter() (deadletter.Filter, error) {
	f := deadletter.Filter{OriginTopic: q.OriginTopic, ErrorContains: q.Error, Key: q.Key}
	var err error
	if f.Since, err = deadletter.ParseWhen(q.Since); err != nil {
		return f, err
	}
	if f.Until, err = deadletter.ParseWhen(q.Until); err != nil {
		return f, err
	}
	for _, s := range strings.Split(q.At, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := deadletter.ParsePosition(s)
		if err != nil {
			return f, err
		}
		f.Positions = append(f.Positions, p)
	}
	return f, nil
}

// values is the query as URL values, for links and hidden fields.
func (q DLQQuery) values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("topic", q.Topic)
	set("origin-topic", q.OriginTopic)
	set("error", q.Error)
	set("key", q.Key)
	set("since", q.Since)
	set("until", q.Until)
	set("at", q.At)
	return v
}

// Fields are the query's hidden form fields.
func (q DLQQuery) Fields() map[string]string {
	out := map[string]string{}
	for k, v := range q.values() {
		out[k] = v[0]
	}
	return out
}

// errLimit stops a listing at its limit.
var errLimit = errors.New("limit reached")

func (s *Server) dlqList(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q, topics, err := s.dlqQuery(ctx, r)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error(), "")
		return
	}
	v := DLQListView{Topic: q.Topic, Topics: topics, Query: q, Letters: []LetterView{}}
	if q.Topic == "" {
		s.render(w, r, http.StatusOK, "dlq", "Dead letters", v)
		return
	}
	flt, err := q.filter()
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error(), "")
		return
	}
	err = deadletter.List(ctx, s.cfg.KafkaOpts, q.Topic, flt, func(l deadletter.Letter) error {
		if q.Limit > 0 && len(v.Letters) >= q.Limit {
			v.Truncated = true
			return errLimit
		}
		v.Letters = append(v.Letters, letterView(l, false))
		return nil
	})
	switch {
	case errors.Is(err, deadletter.ErrTopicNotFound):
		s.fail(w, r, http.StatusNotFound, "topic "+q.Topic+" does not exist",
			"no dead letters yet, or a wrong topic; `outbox topics apply` creates it")
		return
	case err != nil && !errors.Is(err, errLimit):
		s.fail(w, r, http.StatusBadGateway, err.Error(), "")
		return
	}
	s.render(w, r, http.StatusOK, "dlq", "Dead letters", v)
}

// DLQShowView is one dead letter with its headers decoded, and what the
// ledger holds about its event.
type DLQShowView struct {
	Topic    string      `json:"topic"`
	Letter   LetterView  `json:"letter"`
	Ledger   []LedgerRow `json:"ledger"`
	Attempts []Attempt   `json:"attempts"`
}

func (s *Server) dlqShow(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	topic := r.FormValue("topic")
	pos, err := deadletter.ParsePosition(r.FormValue("at"))
	if err != nil || topic == "" {
		s.fail(w, r, http.StatusBadRequest, "want ?topic=DLQ&at=PARTITION:OFFSET", "")
		return
	}
	l, err := deadletter.Get(ctx, s.cfg.KafkaOpts, topic, pos)
	switch {
	case errors.Is(err, deadletter.ErrNotFound), errors.Is(err, deadletter.ErrTopicNotFound):
		s.fail(w, r, http.StatusNotFound, err.Error(), "")
		return
	case err != nil:
		s.fail(w, r, http.StatusBadGateway, err.Error(), "")
		return
	}
	v := DLQShowView{Topic: topic, Letter: letterView(l, true), Ledger: []LedgerRow{}, Attempts: []Attempt{}}
	if id, err := uuid.Parse(l.EventID); err == nil {
		if v.Ledger, err = readLedgerRows(ctx, s.db, []uuid.UUID{id}); err != nil {
			s.fail(w, r, http.StatusBadGateway, err.Error(), "")
			return
		}
		if v.Attempts, err = readAttempts(ctx, s.db, []uuid.UUID{id}); err != nil {
			s.fail(w, r, http.StatusBadGateway, err.Error(), "")
			return
		}
	}
	s.render(w, r, http.StatusOK, "dlq_show", "Dead letter "+pos.String(), v)
}

// ReplayView is a replay's or a quarantine's plan (dry run) or result.
type ReplayView struct {
	Topic  string   `json:"topic"`
	Query  DLQQuery `json:"filter"`
	DryRun bool     `json:"dry_run"`
	// Quarantine is true for the quarantine action: the chosen letters go to
	// the quarantine topic instead of their origin.
	Quarantine bool      `json:"quarantine"`
	Outcomes   []Outcome `json:"outcomes"`
	// Replayed .. NoDestination are deadletter.ReplayResult's counts.
	Replayed        int    `json:"replayed"`
	Quarantined     int    `json:"quarantined"`
	AlreadyReplayed int    `json:"already_replayed"`
	NoDestination   int    `json:"no_destination"`
	Error           string `json:"error,omitempty"`
	// Confirm is the dry run's plan as a filter: its positions only.
	Confirm DLQQuery `json:"-"`
}

// Outcome is what the replay did, or would do, with one dead letter.
type Outcome struct {
	Position    string `json:"position"`
	Key         string `json:"key"`
	EventID     string `json:"event_id"`
	ReplayCount int    `json:"replay_count"`
	Action      string `json:"action"`
	To          string `json:"to"`
}

// Modes of the dead-letter actions' form field "mode".
const (
	modeDryRun     = "dry-run"
	modeReplay     = "replay"
	modeQuarantine = "quarantine"
)

// dlqReplay is POST /dlq/replay: mode=dry-run plans and shows a confirmation;
// mode=replay with confirm=yes replays. Both are actions (see allow): a dry
// run reads only, but the flow it starts ends in a write.
func (s *Server) dlqReplay(w http.ResponseWriter, r *http.Request) { s.dlqAction(w, r, false) }

// dlqQuarantine is POST /dlq/quarantine: as dlqReplay, with
// mode=quarantine, and the chosen letters go to the quarantine topic (with
// a replay ledger entry, so no later replay sends them back) whatever their
// replay count.
func (s *Server) dlqQuarantine(w http.ResponseWriter, r *http.Request) { s.dlqAction(w, r, true) }

// dlqAction runs a replay or a quarantine through deadletter.Replay.
func (s *Server) dlqAction(w http.ResponseWriter, r *http.Request, quarantine bool) {
	if !s.allow(w, r) {
		return
	}
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error(), "")
		return
	}
	name, write := "replay", modeReplay
	if quarantine {
		name, write = "quarantine", modeQuarantine
	}
	q, _, err := s.dlqQuery(ctx, r)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error(), "")
		return
	}
	flt, err := q.filter()
	if err != nil || q.Topic == "" {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("%s needs a topic and a valid filter: %v", name, err), "")
		return
	}
	mode := r.FormValue("mode")
	if mode != write && mode != modeDryRun {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("mode %q: use %s or %s", mode, modeDryRun, write), "")
		return
	}
	dry := mode == modeDryRun
	if !dry && r.FormValue("confirm") != "yes" {
		s.fail(w, r, http.StatusBadRequest, "a "+name+" needs confirm=yes",
			"run the dry run first (mode=dry-run); its page has the confirmation")
		return
	}
	cfg := deadletter.ReplayConfig{Topic: q.Topic, Filter: flt, MaxReplays: s.cfg.MaxReplays, Quarantine: quarantine, DryRun: dry, Logger: s.cfg.Logger}
	if q.Limit > 0 && r.FormValue("limit") != "" {
		cfg.Limit = q.Limit
	}
	if !dry {
		s.cfg.Logger.InfoContext(ctx, "console: "+name, "topic", q.Topic, "filter", q.values().Encode(), "remote", r.RemoteAddr)
	}
	res, err := deadletter.Replay(ctx, s.cfg.KafkaOpts, cfg)
	if errors.Is(err, deadletter.ErrTopicNotFound) {
		s.fail(w, r, http.StatusNotFound, err.Error(), "")
		return
	}
	v := ReplayView{Topic: q.Topic, Query: q, DryRun: dry, Quarantine: quarantine, Outcomes: []Outcome{}, Replayed: res.Replayed,
		Quarantined: res.Quarantined, AlreadyReplayed: res.AlreadyReplayed, NoDestination: res.NoDestination}
	for _, o := range res.Outcomes {
		v.Outcomes = append(v.Outcomes, Outcome{Position: o.Letter.Position().String(), Key: printable(o.Letter.Record.Key),
			EventID: o.Letter.EventID, ReplayCount: o.Letter.ReplayCount, Action: o.Action, To: o.To})
	}
	// The confirmation acts on exactly the records the dry run planned,
	// not whatever the filter matches by then.
	var planned []string
	for _, o := range v.Outcomes {
		if o.Action == deadletter.ActionReplay || o.Action == deadletter.ActionQuarantine {
			planned = append(planned, o.Position)
		}
	}
	v.Confirm = q
	v.Confirm.At = strings.Join(planned, ",")
	code := http.StatusOK
	if err != nil {
		v.Error, code = err.Error(), http.StatusBadGateway
	}
	title := map[bool]string{false: "Replay", true: "Quarantine"}[quarantine]
	if dry {
		title += ": dry run"
	}
	s.render(w, r, code, "replay", title, v)
}
