package demo

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/ops/kafkaread"
	"github.com/outboxrelay/outbox/sql"
)

// Topics the audit reads.
const (
	EventsTopic   = "outbox.order"
	PaymentTopic  = "commands.payment"
	ShippingTopic = "commands.shipping"
	TransformDLQ  = "outbox.transform.dlq"
)

// Counter reads the pipeline's state from its sources of truth: the outbox
// and ledger tables, and Kafka as a read_committed consumer sees it.
type Counter struct {
	dbURL string
	kopts []kgo.Opt
	pool  *pgxpool.Pool
	q     *sql.Queries
}

// NewCounter prepares a counter; connections open on first use.
func NewCounter(dbURL string, kopts []kgo.Opt) *Counter {
	return &Counter{dbURL: dbURL, kopts: kopts, q: sql.New()}
}

// Close releases the counter's connections.
func (c *Counter) Close() {
	if c.pool != nil {
		c.pool.Close()
	}
}

func (c *Counter) db(ctx context.Context) (sql.DBTX, error) {
	if c.pool == nil {
		p, err := pgxpool.New(ctx, c.dbURL)
		if err != nil {
			return nil, fmt.Errorf("demo: counter pool: %w", err)
		}
		c.pool = p
	}
	return sql.InSchema(c.pool, "outbox"), nil
}

// Progress is one line of the live view.
type Progress struct {
	Events   int64
	Relayed  int64 // approximate: end offsets include transaction markers
	Commands int64 // approximate, likewise
	Ledger   map[string]map[string]int64
}

// Settled reports whether every command of accepted orders reached a final
// ledger status at both endpoints.
func (p Progress) Settled(accepted int) bool {
	if accepted == 0 || p.Events < int64(accepted) {
		return false
	}
	for _, ep := range []string{"payment", "shipping"} {
		st := p.Ledger[ep]
		if st["succeeded"]+st["dead_lettered"] < int64(accepted) {
			return false
		}
	}
	return true
}

func (p Progress) String() string {
	var parts []string
	for _, ep := range []string{"payment", "shipping"} {
		st := p.Ledger[ep]
		parts = append(parts, fmt.Sprintf("%s ok=%d retry=%d unknown=%d dlq=%d", ep, st["succeeded"], st["retrying"], st["unknown"], st["dead_lettered"]))
	}
	return fmt.Sprintf("outbox events %d | in kafka ~%d | commands ~%d | %s", p.Events, p.Relayed, p.Commands, strings.Join(parts, " | "))
}

// Progress samples the pipeline.
func (c *Counter) Progress(ctx context.Context) (Progress, error) {
	db, err := c.db(ctx)
	if err != nil {
		return Progress{}, err
	}
	var p Progress
	if p.Events, err = c.q.CountEvents(ctx, db); err != nil {
		return p, fmt.Errorf("demo: count events: %w", err)
	}
	if p.Ledger, err = c.ledger(ctx, db); err != nil {
		return p, err
	}
	cl, err := kgo.NewClient(c.kopts...)
	if err != nil {
		return p, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, EventsTopic, PaymentTopic, ShippingTopic)
	if err != nil {
		return p, err
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Topic == EventsTopic {
			p.Relayed += o.Offset
		} else {
			p.Commands += o.Offset
		}
	})
	return p, nil
}

func (c *Counter) ledger(ctx context.Context, db sql.DBTX) (map[string]map[string]int64, error) {
	rows, err := c.q.DemoLedgerCounts(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("demo: ledger counts: %w", err)
	}
	out := map[string]map[string]int64{}
	for _, r := range rows {
		if out[r.Endpoint] == nil {
			out[r.Endpoint] = map[string]int64{}
		}
		out[r.Endpoint][r.Status] += r.N
		out[r.Endpoint]["reconciled"] += r.Reconciled
	}
	return out, nil
}

// AuditInput is what the demo saw outside the sources of truth.
type AuditInput struct {
	Load     LoadResult
	Sent     *Load
	Service  *OrderService
	Payment  *MockAPI
	Shipping *MockAPI
	// Chaos says whether stages were killed on purpose; ChaosKills counts
	// the kills.
	Chaos      bool
	ChaosKills int
	Elapsed    time.Duration
	// NotSettled says why the run was audited before the pipeline settled
	// (its drain timeout passed); empty when it settled. A run that did not
	// settle fails the audit, whatever the counts say by the time it runs.
	NotSettled string
	// Webhooks is the acquirer's sender and WebhookResult what it saw; nil
	// Webhooks skips their checks.
	Webhooks      *Webhooks
	WebhookResult WebhookResult
}

// Audit is the demo's closing report.
type Audit struct {
	Lines    []string
	Failures []string
	// Stages says how far each part of the pipeline got, in order: the load
	// generator, the relay, the transform, the two sinks.
	Stages []StageCount
}

// StageCount is how far one part of the pipeline got by the audit: Seen of
// the Expected it was given.
type StageCount struct {
	// Stage is "load", "relay", "transform", "sink-payment" or "sink-shipping".
	Stage string
	// What names what was counted.
	What string
	// Expected is what the stage was given: orders to place for the load;
	// outbox events for the relay; events in outbox.order, once per command
	// topic, for the transform; commands in its topic for a sink.
	Expected int64
	// Seen is what it delivered: orders accepted; outbox events in
	// outbox.order; distinct commands; ledger rows final (succeeded or
	// dead-lettered).
	Seen int64
}

// Behind reports whether the stage delivered less than it was given.
func (s StageCount) Behind() bool { return s.Seen < s.Expected }

func (s StageCount) String() string {
	return fmt.Sprintf("%s %d of %d %s", s.Stage, s.Seen, s.Expected, s.What)
}

// Behind returns the stages that delivered less than they were given.
func (a *Audit) Behind() []StageCount {
	var out []StageCount
	for _, s := range a.Stages {
		if s.Behind() {
			out = append(out, s)
		}
	}
	return out
}

// Pass reports whether every check held.
func (a *Audit) Pass() bool { return len(a.Failures) == 0 }

func (a *Audit) String() string {
	var b strings.Builder
	b.WriteString("\n== audit\n")
	for _, l := range a.Lines {
		b.WriteString("  " + l + "\n")
	}
	if a.Pass() {
		b.WriteString("PASS: every order's event relayed once, every command produced once, at most one external effect per event, accounting balances, every webhook once with the newest version last\n")
	} else {
		b.WriteString("FAIL: " + strings.Join(a.Failures, "; ") + "\n")
	}
	return b.String()
}

// Audit counts everything once the stages have stopped.
func (c *Counter) Audit(ctx context.Context, in AuditInput) (*Audit, error) {
	a := &Audit{}
	line := func(format string, args ...any) { a.Lines = append(a.Lines, fmt.Sprintf(format, args...)) }
	check := func(ok bool, format string, args ...any) {
		if !ok {
			a.Failures = append(a.Failures, fmt.Sprintf(format, args...))
		}
	}
	db, err := c.db(ctx)
	if err != nil {
		return nil, err
	}
	created, replayed, conflicts := in.Service.Counts()
	chaos := "no chaos"
	if in.Chaos {
		chaos = fmt.Sprintf("%d chaos kills", in.ChaosKills)
	}
	line("orders accepted: %d (service created %d; duplicate submissions %d, answered by replay %d, 409/422 %d; never accepted %d) in %s, %s",
		in.Load.Accepted, created, in.Load.Duplicates, replayed, conflicts, in.Load.Failed, in.Elapsed.Round(time.Second), chaos)
	check(created == in.Load.Accepted, "service created %d orders for %d accepted", created, in.Load.Accepted)
	if in.Sent != nil {
		a.Stages = append(a.Stages, StageCount{Stage: "load", What: "orders accepted", Expected: int64(in.Sent.Orders), Seen: in.Load.Accepted})
	}

	ids, err := c.q.DemoEventIDs(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("demo: event ids: %w", err)
	}
	check(int64(len(ids)) == created, "%d order.created events in the outbox for %d orders", len(ids), created)

	recs, err := kafkaread.ReadCommitted(ctx, c.kopts, EventsTopic, PaymentTopic, ShippingTopic, TransformDLQ)
	if err != nil {
		return nil, err
	}
	seen := map[string]map[string]int{}
	byRef, maxValue := 0, 0
	for _, r := range recs {
		if r.Topic == EventsTopic && header(r, claimcheck.HeaderRef) != "" {
			byRef++
			maxValue = max(maxValue, len(r.Value))
		}
		id := header(r, envelope.HeaderEventID)
		if seen[r.Topic] == nil {
			seen[r.Topic] = map[string]int{}
		}
		seen[r.Topic][id]++
	}
	dups := func(topic string) (distinct, dup int) {
		for _, n := range seen[topic] {
			distinct++
			dup += n - 1
		}
		return
	}
	evDistinct, evDup := dups(EventsTopic)
	lost := 0
	for _, id := range ids {
		if seen[EventsTopic][id.String()] == 0 {
			lost++
		}
	}
	line("events relayed: %d distinct in %s, %d duplicates, %d outbox events missing", evDistinct, EventsTopic, evDup, lost)
	check(evDup == 0, "%d duplicate events in %s", evDup, EventsTopic)
	check(lost == 0, "%d committed outbox events never reached %s", lost, EventsTopic)
	if in.Sent != nil {
		// Every large order's event went by reference, and its commands were
		// made from the resolved payload (the counts below).
		large := in.Sent.LargeOrders()
		line("large orders: %d placed with a 1.5 MiB attachment, %d events in %s by claim-check reference (largest such record value %d bytes)", large, byRef, EventsTopic, maxValue)
		check(byRef >= large, "%d claim-check events in %s for %d large orders", byRef, EventsTopic, large)
	}
	a.Stages = append(a.Stages, StageCount{Stage: "relay", What: "outbox events in " + EventsTopic, Expected: int64(len(ids)), Seen: int64(len(ids) - lost)})

	commands := map[string]int{}
	transform := StageCount{Stage: "transform", What: "commands in " + PaymentTopic + " and " + ShippingTopic}
	for _, t := range []string{PaymentTopic, ShippingTopic} {
		d, dup := dups(t)
		commands[t] = d
		transform.Expected += int64(evDistinct)
		transform.Seen += int64(d)
		line("commands produced: %d distinct in %s, %d duplicates", d, t, dup)
		check(dup == 0, "%d duplicate commands in %s", dup, t)
		check(d == len(ids), "%d commands in %s for %d events", d, t, len(ids))
	}
	a.Stages = append(a.Stages, transform)
	dlqTransform, _ := dups(TransformDLQ)
	line("transform dead letters: %d", dlqTransform)

	ledger, err := c.ledger(ctx, db)
	if err != nil {
		return nil, err
	}
	for _, api := range []*MockAPI{in.Payment, in.Shipping} {
		st := ledger[api.Name]
		a.Stages = append(a.Stages, StageCount{Stage: "sink-" + api.Name, What: "commands final in the ledger",
			Expected: int64(commands["commands."+api.Name]), Seen: st["succeeded"] + st["dead_lettered"]})
		keys, maxPer := api.Effects()
		statuses := make([]string, 0, len(st))
		var total int64
		for s, n := range st {
			if s == "reconciled" {
				continue
			}
			statuses = append(statuses, fmt.Sprintf("%s=%d", s, n))
			total += n
		}
		sort.Strings(statuses)
		line("%s API (honours keys: %t): %d calls, %d events with an effect, max effects per event %d; ledger %s (reconciled %d)",
			api.Name, api.HonoursKeys, api.Calls(), keys, maxPer, strings.Join(statuses, " "), st["reconciled"])
		check(maxPer <= 1, "%s: an event had %d external effects", api.Name, maxPer)
		check(total == int64(len(ids)), "%s: ledger has %d rows for %d commands", api.Name, total, len(ids))
		check(st["succeeded"]+st["dead_lettered"] == int64(len(ids)),
			"%s: accounting: succeeded %d + dead-lettered %d != %d commands (open: retrying %d, unknown %d, failed %d, in_flight %d, pending %d)",
			api.Name, st["succeeded"], st["dead_lettered"], len(ids), st["retrying"], st["unknown"], st["failed"], st["in_flight"], st["pending"])
		check(int64(keys) >= st["succeeded"], "%s: %d succeeded rows but only %d effects", api.Name, st["succeeded"], keys)
		if in.Sent != nil {
			traced := 0
			for _, tr := range api.Traces() {
				if in.Sent.SentTrace(tr) {
					traced++
				}
			}
			line("%s API: %d of %d effecting calls carried the trace id of the order request that caused them", api.Name, traced, keys)
			check(traced == keys, "%s: %d of %d calls lost the order's trace context", api.Name, keys-traced, keys)
		}
	}

	if in.Webhooks != nil {
		if err := c.auditWebhooks(ctx, in.Webhooks, in.WebhookResult, line, check); err != nil {
			return nil, err
		}
	}

	stages := make([]string, len(a.Stages))
	for i, s := range a.Stages {
		stages[i] = fmt.Sprintf("%s %d/%d", s.Stage, s.Seen, s.Expected)
	}
	line("stages, delivered/given: %s", strings.Join(stages, ", "))
	if in.NotSettled != "" {
		// First, as the reason the rest does not add up.
		a.Failures = append([]string{notSettled(in.NotSettled, a.Behind())}, a.Failures...)
	}
	return a, nil
}

// notSettled is the failure of a run that did not settle in time, naming the
// stages that were behind by the audit.
func notSettled(why string, behind []StageCount) string {
	if len(behind) == 0 {
		return why + "; every stage had caught up by the audit (they drain while they stop): a longer --timeout may pass"
	}
	names := make([]string, len(behind))
	for i, s := range behind {
		names[i] = s.String()
	}
	return why + "; behind: " + strings.Join(names, "; ")
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
