package console_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/console"
	"github.com/outboxrelay/outbox/internal/ops/deadletter"
	"github.com/outboxrelay/outbox/internal/ops/lagcheck"
	"github.com/outboxrelay/outbox/sink"
)

// pipelineJSON is what /?format=json answers.
type pipelineJSON struct {
	At          time.Time                `json:"at"`
	Slots       []console.Slot           `json:"slots"`
	Lag         console.LagReport        `json:"lag"`
	Ledger      []sink.StatusCount       `json:"ledger"`
	DeadLetters []console.DLQCount       `json:"dead_letters"`
	Errors      []string                 `json:"errors"`
	Endpoints   []console.EndpointCounts `json:"endpoints"`
	Stages      []console.StageInstance  `json:"stages"`
}

// TestConsoleOnAPipeline runs one real pipeline and checks, in order, that
// the pages show the CLI's figures, that an order's journey shows its call,
// that actions are refused without --allow-actions or the token, that a
// dry run changes nothing and that a confirmed replay replays once and the
// call then succeeds.
func TestConsoleOnAPipeline(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, 5, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const token = "s3cret-token"
	srv := p.console(func(c *console.Config) { c.AllowActions, c.Token = true, token })
	good, bad := p.orders[1], p.orders[0]
	sinkGroup := p.prefix + "-payments"

	t.Run("figures equal the CLI's", func(t *testing.T) {
		// The console's sample must postdate the stalled group's commit.
		var page pipelineJSON
		require.Eventually(t, func() bool {
			page = pipelineJSON{}
			if getJSON(t, srv, "/", &page) != http.StatusOK {
				return false
			}
			seen := 0
			for _, g := range page.Lag.Groups {
				// Partitions present: a sample from before the group's
				// first commit shows none, and lag 0 too.
				if len(g.Partitions) > 0 && (g.Group == p.stalled || g.Group == sinkGroup && g.Lag == 0) {
					seen++
				}
			}
			return seen == 2
		}, 30*time.Second, 100*time.Millisecond, "the pipeline page shows both groups")
		require.Empty(t, page.Errors)

		// outbox lag --window 1 --group ...: the same function, a fresh checker.
		checker, err := lagcheck.New(lagcheck.Config{Groups: []string{p.stalled, sinkGroup}, Window: 1, ProbeTimeout: time.Second}, p.k.Opts()...)
		require.NoError(t, err)
		defer checker.Close()
		cli, err := checker.Sample(ctx)
		require.NoError(t, err)
		require.Len(t, cli.Groups, 2)
		for _, want := range cli.Groups {
			var got *console.LagGroup
			for i := range page.Lag.Groups {
				if page.Lag.Groups[i].Group == want.Group {
					got = &page.Lag.Groups[i]
				}
			}
			require.NotNil(t, got, "group %s on the page", want.Group)
			require.Equal(t, want.Status.String(), got.Status, want.Group)
			require.Equal(t, want.Worst.String(), got.Worst, want.Group)
			require.Equal(t, want.State, got.State, want.Group)
			require.Equal(t, want.Members, got.Members, want.Group)
			require.Equal(t, want.Lag, got.Lag, want.Group)
			// Lag seconds grow with the clock: the page's sample is older by
			// the time between the two samples.
			skew := cli.At.Sub(page.Lag.At).Seconds()
			require.InDelta(t, want.MaxLagSeconds, got.LagSeconds+skew*sign(want.MaxLagSeconds), 1.0, want.Group)
			require.Len(t, got.Partitions, len(want.Partitions), want.Group)
			for i, wp := range want.Partitions {
				gp := got.Partitions[i]
				require.Equal(t, []any{wp.Topic, wp.Partition, wp.Committed, wp.End, wp.HighWatermark, wp.Lag, wp.Status.String()},
					[]any{gp.Topic, gp.Partition, gp.Committed, gp.LSO, gp.HWM, gp.Lag, gp.Status}, "%s %s/%d", want.Group, wp.Topic, wp.Partition)
			}
		}
		var stalled console.LagGroup
		for _, g := range page.Lag.Groups {
			if g.Group == p.stalled {
				stalled = g
			}
		}
		require.Equal(t, "ERR", stalled.Status, "lag and no member")
		require.Equal(t, "STOP", stalled.Worst)
		// Lag counts offsets, the transaction markers between the orders too.
		require.GreaterOrEqual(t, stalled.Lag, int64(len(p.orders)), "every order is unconsumed by the stalled group")
		require.Positive(t, stalled.LagSeconds)

		// outbox sink status (24h) is the pipeline's ledger, and ?window= the ledger page's.
		status, err := sink.Status(ctx, p.pool, "outbox", time.Now().Add(-24*time.Hour))
		require.NoError(t, err)
		require.Equal(t, status, page.Ledger)
		require.Equal(t, []console.EndpointCounts{{Endpoint: "payments", Total: 5,
			Rows: map[string]int64{sink.StatusSucceeded: 4, sink.StatusDeadLettered: 1}}}, page.Endpoints)
		var ledger console.LedgerView
		require.Equal(t, http.StatusOK, getJSON(t, srv, "/ledger?window=1h", &ledger))
		status, err = sink.Status(ctx, p.pool, "outbox", time.Now().Add(-time.Hour))
		require.NoError(t, err)
		require.Equal(t, status, ledger.Counts)
		require.Equal(t, http.StatusBadRequest, getJSON(t, srv, "/ledger?window=yesterday", nil))

		// outbox dlq list: the count on the pipeline, the letters on /dlq.
		var letters []deadletter.Letter
		require.NoError(t, deadletter.List(ctx, p.k.Opts(), p.dlq, deadletter.Filter{}, func(l deadletter.Letter) error {
			letters = append(letters, l)
			return nil
		}))
		require.Len(t, letters, 1)
		require.Contains(t, page.DeadLetters, console.DLQCount{Topic: p.dlq, Count: len(letters)})
		var list console.DLQListView
		require.Equal(t, http.StatusOK, getJSON(t, srv, "/dlq?topic="+p.dlq, &list))
		require.Len(t, list.Letters, len(letters))
		for i, l := range letters {
			got := list.Letters[i]
			require.Equal(t, []any{l.Position().String(), string(l.Record.Key), l.EventID, l.ReplayCount, l.DeadLetter.OriginTopic, l.DeadLetter.ErrorClass},
				[]any{got.Position, got.Key, got.EventID, got.ReplayCount, got.DeadLetter.OriginTopic, got.DeadLetter.ErrorClass})
		}
		require.Equal(t, bad.EventID.String(), list.Letters[0].EventID)
		// A filter that matches nothing lists nothing, as the CLI's would.
		require.Equal(t, http.StatusOK, getJSON(t, srv, "/dlq?topic="+p.dlq+"&error=no-such-error", &list))
		require.Empty(t, list.Letters)

		// The relay's slot, as pg_replication_slots has it.
		var pid int
		require.NoError(t, p.pool.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, p.prefix+"_relay").Scan(&pid))
		require.Len(t, page.Slots, 1)
		require.Equal(t, p.prefix+"_relay", page.Slots[0].Name)
		require.True(t, page.Slots[0].Active)
		require.Equal(t, pid, page.Slots[0].ActivePID)

		// The HTML says the same.
		html := getHTML(t, srv, "/")
		require.Contains(t, html, p.stalled)
		require.Contains(t, html, "ERR(STOP)")
		require.Eventually(t, func() bool { return strings.Contains(getHTML(t, srv, "/"), `<svg class="chart"`) },
			20*time.Second, 100*time.Millisecond, "the chart, from the second sample on")
	})

	t.Run("journey of an order shows its call", func(t *testing.T) {
		for _, q := range []string{good.ID, good.EventID.String(), good.CorrelationID} {
			var j console.JourneyView
			require.Equal(t, http.StatusOK, getJSON(t, srv, "/journey?q="+url.QueryEscape(q), &j), q)
			require.Len(t, j.Events, 1, q)
			require.Equal(t, good.EventID, j.Events[0].EventID, q)
			require.Positive(t, j.Events[0].XID, q)
			require.NotEmpty(t, j.Records, q)
			require.Equal(t, "event", j.Records[0].Role, q)
			require.Equal(t, p.topic, j.Records[0].Topic, q)
			require.Equal(t, good.EventID.String(), j.Records[0].EventID, q)
			require.Len(t, j.Attempts, 1, q)
			require.Equal(t, "succeeded", j.Attempts[0].Outcome, q)
			require.Equal(t, 200, *j.Attempts[0].StatusCode, q)
			require.Contains(t, j.Attempts[0].BodyHead, "ch_"+good.ID, q)
			require.Equal(t, []string{good.TraceID}, j.TraceIDs, q)
			require.Empty(t, j.Stuck, q)
		}
		var j console.JourneyView
		require.Equal(t, http.StatusOK, getJSON(t, srv, "/journey?q="+bad.ID, &j))
		require.Len(t, j.Stuck, 1)
		require.Contains(t, j.Stuck[0], "dead_lettered")
		require.Contains(t, j.Stuck[0], "HTTP 422")
		roles := map[string]int{}
		for _, r := range j.Records {
			roles[r.Role]++
		}
		require.Equal(t, 1, roles["dead letter"], "the dead letter is part of the journey")
		require.Contains(t, getHTML(t, srv, "/journey?q="+good.ID), "ch_"+good.ID)
	})

	t.Run("page times", func(t *testing.T) {
		// Logged, not asserted: a speed bound belongs in a benchmark.
		var list console.DLQListView
		require.Equal(t, http.StatusOK, getJSON(t, srv, "/dlq?topic="+p.dlq, &list))
		require.NotEmpty(t, list.Letters)
		show := "/dlq/show?topic=" + p.dlq + "&at=" + list.Letters[0].Position
		for _, path := range []string{"/", "/ledger?window=24h", "/journey?q=" + good.ID, "/dlq?topic=" + p.dlq, show} {
			var took []time.Duration
			for range 10 {
				began := time.Now()
				resp, err := http.Get(srv.URL + path)
				require.NoError(t, err)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				took = append(took, time.Since(began))
			}
			slices.Sort(took)
			t.Logf("%-40s p50 %6s  max %6s", path, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
		}
	})

	t.Run("actions are refused without --allow-actions or the token", func(t *testing.T) {
		readOnly := p.console(nil)
		replay := url.Values{"topic": {p.dlq}, "mode": {"replay"}, "confirm": {"yes"}}
		code, body := post(t, readOnly, "/dlq/replay", replay, map[string]string{"Authorization": "Bearer " + token})
		require.Equal(t, http.StatusForbidden, code)
		require.Contains(t, body, "--allow-actions")
		for name, h := range map[string]map[string]string{
			"no token":    nil,
			"wrong token": {"Authorization": "Bearer nope"},
			"wrong basic": {"Authorization": "Basic " + basic("oncall", "nope")},
		} {
			code, body := post(t, srv, "/dlq/replay", replay, h)
			require.Equal(t, http.StatusUnauthorized, code, name)
			require.Contains(t, body, "token", name)
		}
		code, _ = post(t, srv, "/dlq/replay", replay, map[string]string{"Authorization": "Bearer " + token, "Sec-Fetch-Site": "cross-site"})
		require.Equal(t, http.StatusForbidden, code, "cross-site")
		code, _ = post(t, srv, "/dlq/replay", url.Values{"topic": {p.dlq}, "mode": {"replay"}}, map[string]string{"Authorization": "Bearer " + token})
		require.Equal(t, http.StatusBadRequest, code, "a replay without confirm=yes")
		p.requireNotReplayed(ctx, t, bad)
	})

	t.Run("a dry run changes nothing", func(t *testing.T) {
		var plan console.ReplayView
		code, body := post(t, srv, "/dlq/replay", url.Values{"topic": {p.dlq}, "mode": {"dry-run"}, "format": {"json"}},
			map[string]string{"Authorization": "Basic " + basic("oncall", token)})
		require.Equal(t, http.StatusOK, code, body)
		decode(t, body, &plan)
		require.True(t, plan.DryRun)
		require.Equal(t, 1, plan.Replayed)
		require.Len(t, plan.Outcomes, 1)
		require.Equal(t, deadletter.ActionReplay, plan.Outcomes[0].Action)
		require.Equal(t, p.topic, plan.Outcomes[0].To)
		p.requireNotReplayed(ctx, t, bad)
	})

	t.Run("a confirmed replay replays once and the call succeeds", func(t *testing.T) {
		p.api.accept(bad.ID)
		form := url.Values{"topic": {p.dlq}, "mode": {"replay"}, "confirm": {"yes"}, "format": {"json"}, "at": {"0:0", "1:0", "2:0"}}
		var res console.ReplayView
		code, body := post(t, srv, "/dlq/replay", form, map[string]string{"Authorization": "Bearer " + token})
		require.Equal(t, http.StatusOK, code, body)
		decode(t, body, &res)
		require.False(t, res.DryRun)
		require.Equal(t, 1, res.Replayed)
		p.waitLedger(ctx, map[string]int64{sink.StatusSucceeded: 5})
		require.Equal(t, 1, p.api.accepted(bad.ID), "one accepted call after the replay")

		var j console.JourneyView
		require.Equal(t, http.StatusOK, getJSON(t, srv, "/journey?q="+bad.ID, &j))
		require.Empty(t, j.Stuck)
		require.Len(t, j.Attempts, 2)
		require.Equal(t, 422, *j.Attempts[0].StatusCode)
		require.Equal(t, 200, *j.Attempts[1].StatusCode)

		code, body = post(t, srv, "/dlq/replay", form, map[string]string{"Authorization": "Bearer " + token})
		require.Equal(t, http.StatusOK, code, body)
		decode(t, body, &res)
		require.Equal(t, 0, res.Replayed)
		require.Equal(t, 1, res.AlreadyReplayed, "a second replay finds it in the replay ledger")
	})

	t.Run("quarantine is refused without actions or the token, dry runs first, and is final", func(t *testing.T) {
		auth := map[string]string{"Authorization": "Bearer " + token}
		id, pos := p.writeDeadLetter(ctx, t, "order-q-"+p.prefix)
		quarantine := p.dlq + ".quarantine"
		ledgerBefore, err := p.k.ReadCommitted(ctx, p.dlq+".replayed")
		require.NoError(t, err)
		ordersBefore, err := p.k.ReadCommitted(ctx, p.topic)
		require.NoError(t, err)
		requireUnchanged := func(what string) {
			t.Helper()
			recs, err := p.k.ReadCommitted(ctx, quarantine)
			require.NoError(t, err)
			require.Empty(t, recs, "%s: nothing quarantined", what)
			recs, err = p.k.ReadCommitted(ctx, p.dlq+".replayed")
			require.NoError(t, err)
			require.Len(t, recs, len(ledgerBefore), "%s: no replay ledger entry", what)
		}

		form := url.Values{"topic": {p.dlq}, "at": {pos}, "mode": {"quarantine"}, "confirm": {"yes"}, "format": {"json"}}
		code, body := post(t, p.console(nil), "/dlq/quarantine", form, auth)
		require.Equal(t, http.StatusForbidden, code, body)
		require.Contains(t, body, "--allow-actions")
		code, body = post(t, srv, "/dlq/quarantine", form, nil)
		require.Equal(t, http.StatusUnauthorized, code, body)
		code, _ = post(t, srv, "/dlq/quarantine", url.Values{"topic": {p.dlq}, "at": {pos}, "mode": {"quarantine"}}, auth)
		require.Equal(t, http.StatusBadRequest, code, "a quarantine without confirm=yes")
		code, _ = post(t, srv, "/dlq/quarantine", url.Values{"topic": {p.dlq}, "at": {pos}, "mode": {"replay"}, "confirm": {"yes"}}, auth)
		require.Equal(t, http.StatusBadRequest, code, "the quarantine action does not replay")
		requireUnchanged("refused")

		var plan console.ReplayView
		code, body = post(t, srv, "/dlq/quarantine", url.Values{"topic": {p.dlq}, "at": {pos}, "mode": {"dry-run"}, "format": {"json"}}, auth)
		require.Equal(t, http.StatusOK, code, body)
		decode(t, body, &plan)
		require.True(t, plan.DryRun)
		require.True(t, plan.Quarantine)
		require.Equal(t, 1, plan.Quarantined)
		require.Zero(t, plan.Replayed)
		require.Equal(t, []console.Outcome{{Position: pos, Key: "order-q-" + p.prefix, EventID: id.String(), Action: deadletter.ActionQuarantine, To: quarantine}}, plan.Outcomes)
		requireUnchanged("dry run")
		// The dry run's page confirms to the quarantine action.
		code, body = post(t, srv, "/dlq/quarantine", url.Values{"topic": {p.dlq}, "at": {pos}, "mode": {"dry-run"}}, auth)
		require.Equal(t, http.StatusOK, code, body)
		require.Contains(t, body, `action="/dlq/quarantine" id="confirm-form"`)
		require.Contains(t, body, `name="mode" value="quarantine"`)

		var res console.ReplayView
		code, body = post(t, srv, "/dlq/quarantine", form, auth)
		require.Equal(t, http.StatusOK, code, body)
		decode(t, body, &res)
		require.False(t, res.DryRun)
		require.Equal(t, 1, res.Quarantined)
		recs, err := p.k.ReadCommitted(ctx, quarantine)
		require.NoError(t, err)
		require.Len(t, recs, 1)
		q := deadletter.Decode(recs[0])
		require.Equal(t, id.String(), q.EventID)
		require.Equal(t, p.topic, q.DeadLetter.OriginTopic, "the quarantined copy keeps the dead-letter headers")
		ledger, err := p.k.ReadCommitted(ctx, p.dlq+".replayed")
		require.NoError(t, err)
		require.Len(t, ledger, len(ledgerBefore)+1, "one replay ledger entry")
		require.Equal(t, p.dlq+"/"+strings.ReplaceAll(pos, ":", "/"), string(ledger[len(ledger)-1].Key))
		require.Contains(t, string(ledger[len(ledger)-1].Value), `"action":"quarantine"`)

		// A later replay (console or CLI: the same function) leaves it alone.
		for _, mode := range []string{"dry-run", "replay"} {
			code, body = post(t, srv, "/dlq/replay", url.Values{"topic": {p.dlq}, "at": {pos}, "mode": {mode}, "confirm": {"yes"}, "format": {"json"}}, auth)
			require.Equal(t, http.StatusOK, code, body)
			decode(t, body, &res)
			require.Zero(t, res.Replayed, mode)
			require.Equal(t, 1, res.AlreadyReplayed, mode)
			require.Equal(t, deadletter.ActionAlreadyReplayed, res.Outcomes[0].Action, mode)
		}
		orders, err := p.k.ReadCommitted(ctx, p.topic)
		require.NoError(t, err)
		require.Len(t, orders, len(ordersBefore), "nothing went back to the origin topic")
		// And a second quarantine finds it done.
		code, body = post(t, srv, "/dlq/quarantine", form, auth)
		require.Equal(t, http.StatusOK, code, body)
		decode(t, body, &res)
		require.Zero(t, res.Quarantined)
		require.Equal(t, 1, res.AlreadyReplayed)

		html := getHTML(t, srv, "/dlq?topic="+p.dlq)
		require.Contains(t, html, `id="dry-run-quarantine" formaction="/dlq/quarantine"`)
	})

	t.Run("stage metrics show roles, breakers, rates and a dead instance", func(t *testing.T) {
		standby := serveMetrics(t)
		p.runRelay(p.relayConfig(standby.reg))
		flaky := p.flakySink(ctx, t)
		gone := httptest.NewServer(http.NotFoundHandler())
		dead := gone.URL + "/metrics"
		gone.Close()
		con := p.console(func(c *console.Config) {
			c.StageMetrics = []string{p.relayMetrics.url, standby.url, strings.TrimSuffix(p.sinkMetrics.url, "/metrics"), flaky.url, dead}
			c.StageTimeout = time.Second
		})

		// Wait for the flaky endpoint's breaker to open, and for rates (a
		// second scrape).
		var page pipelineJSON
		require.Eventually(t, func() bool {
			page = pipelineJSON{}
			if getJSON(t, con, "/", &page) != http.StatusOK || len(page.Stages) != 5 {
				return false
			}
			fl := page.Stages[3]
			return len(fl.SinkEndpoints) == 1 && fl.SinkEndpoints[0].Breaker == "open" && page.Stages[0].RateSeconds > 0
		}, 30*time.Second, 100*time.Millisecond, "the flaky endpoint's breaker opens and rates appear")

		slot := p.prefix + "_relay"
		active, stand, payments, fl, down := page.Stages[0], page.Stages[1], page.Stages[2], page.Stages[3], page.Stages[4]
		require.Equal(t, p.relayMetrics.url, active.URL)
		require.Equal(t, []string{console.KindRelay}, active.Kinds)
		require.Len(t, active.Relays, 1)
		require.Equal(t, slot, active.Relays[0].Slot)
		require.Equal(t, console.RoleActive, active.Relays[0].Role)
		require.Equal(t, metricValue(t, p.relayMetrics.reg, "outbox_relay_active"), 1.0)
		require.NotNil(t, active.Relays[0].Events.PerSecond, "a rate from the second scrape on")
		require.GreaterOrEqual(t, active.Relays[0].Events.Total, float64(len(p.orders)))
		require.Positive(t, active.Relays[0].RetainedWALBytes, "the gauge moves with the WAL: only its presence is checked")

		require.Equal(t, []string{console.KindRelay}, stand.Kinds)
		require.Len(t, stand.Relays, 1)
		require.Equal(t, slot, stand.Relays[0].Slot)
		require.Equal(t, console.RoleStandby, stand.Relays[0].Role, "the second relay of the slot waits")
		require.Equal(t, metricValue(t, standby.reg, "outbox_relay_active"), 0.0)
		require.Zero(t, stand.Relays[0].Events.Total)

		require.Equal(t, p.sinkMetrics.url, payments.URL, "host:port/ means its /metrics")
		require.Equal(t, []string{console.KindSink}, payments.Kinds)
		require.Len(t, payments.SinkEndpoints, 1)
		pe := payments.SinkEndpoints[0]
		require.Equal(t, "payments", pe.Endpoint)
		require.Equal(t, "closed", pe.Breaker)
		require.Equal(t, metricValue(t, p.sinkMetrics.reg, "outbox_sink_breaker_state", "endpoint", "payments"), pe.BreakerState)
		calls := map[string]float64{}
		for _, c := range pe.Calls {
			calls[c.Outcome] = c.Total
			require.NotNil(t, c.PerSecond, c.Outcome)
		}
		require.Equal(t, metricValue(t, p.sinkMetrics.reg, "outbox_sink_calls_total", "endpoint", "payments", "outcome", "succeeded"), calls["succeeded"])
		require.Equal(t, map[string]float64{"succeeded": 5, "permanent": 1}, calls, "four good orders, the declined one, then its replay")
		require.Equal(t, 1.0, pe.DeadLetters.Total)
		require.NotNil(t, pe.DeadLetters.PerMinute)

		require.Len(t, fl.SinkEndpoints, 1)
		fe := fl.SinkEndpoints[0]
		require.Equal(t, "flaky", fe.Endpoint)
		require.Equal(t, 2.0, fe.BreakerState)
		require.Equal(t, metricValue(t, flaky.reg, "outbox_sink_breaker_state", "endpoint", "flaky"), fe.BreakerState)

		require.Equal(t, dead, down.URL)
		require.Contains(t, down.Error, dead)
		require.Empty(t, down.Kinds)
		require.Empty(t, page.Errors, "an instance that does not answer is its own error, not the sample's")

		html := getHTML(t, con, "/")
		require.Contains(t, html, `<td class="warn">standby</td><td>`+standby.url+`</td>`)
		require.Contains(t, html, `<td class="err breaker">open</td>`)
		require.Contains(t, html, `<td class="ok breaker">closed</td>`)
		require.Contains(t, html, "not answering: console: scrape "+dead+": ")
		require.Contains(t, html, `<span class="ok">active</span> `+p.relayMetrics.url)
	})
}

// writeDeadLetter writes a dead letter of a new event to the sink's
// dead-letter topic, as the sink writes them, and returns its event id and
// position.
func (p *pipeline) writeDeadLetter(ctx context.Context, t *testing.T, key string) (uuid.UUID, string) {
	t.Helper()
	cl, err := kgo.NewClient(p.k.Opts()...)
	require.NoError(t, err)
	defer cl.Close()
	id := uuid.Must(uuid.NewV7())
	d := envelope.DeadLetter{OriginTopic: p.topic, Stage: "sink", StageName: "payments",
		ErrorClass: "http_422", ErrorMessage: "card declined", Attempt: 1, At: time.Now().UTC()}
	r := &kgo.Record{Topic: p.dlq, Key: []byte(key), Value: []byte(`{"order":"` + key + `"}`),
		Headers: []kgo.RecordHeader{{Key: envelope.HeaderEventID, Value: []byte(id.String())}}}
	for _, h := range d.Headers() {
		r.Headers = append(r.Headers, kgo.RecordHeader(h))
	}
	require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
	return id, deadletter.Position{Partition: r.Partition, Offset: r.Offset}.String()
}

// flakySink runs a second sink, exporting to a registry of its own, whose
// API answers 503: one failed call opens its breaker (for an hour).
func (p *pipeline) flakySink(ctx context.Context, t *testing.T) metricsServer {
	t.Helper()
	m := serveMetrics(t)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	topic := p.prefix + ".flaky"
	p.k.CreateTopic(topic, 1, nil)
	req, err := sink.NewTemplateRequest(sink.RequestTemplate{URL: down.URL + "/calls"})
	require.NoError(t, err)
	s, err := sink.New(sink.Config{
		Pool: p.pool, KafkaOpts: p.k.Opts(), Group: p.prefix + "-flaky", CommitInterval: 100 * time.Millisecond,
		Endpoints: []sink.Endpoint{{Name: "flaky", Topics: []string{topic}, Request: req, Idempotent: true, Timeout: time.Second,
			Breaker: sink.BreakerConfig{Failures: 1, Cooldown: time.Hour},
			Retry:   sink.RetryPolicy{Retries: 3, Initial: 50 * time.Millisecond, Tiers: []time.Duration{time.Second}}}},
		Logger: testLogger(t), Registerer: m.reg,
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, s.Stop(sctx))
	})
	cl, err := kgo.NewClient(p.k.Opts()...)
	require.NoError(t, err)
	defer cl.Close()
	id := uuid.Must(uuid.NewV7())
	r := &kgo.Record{Topic: topic, Key: []byte("flaky-1"), Value: []byte(`{}`),
		Headers: []kgo.RecordHeader{{Key: envelope.HeaderEventID, Value: []byte(id.String())}}}
	require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
	return m
}

// metricValue is the value of the registry's series of the family whose
// labels include the given name, value pairs.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s %v", name, labels)
	return 0
}

// requireNotReplayed checks that nothing was replayed: the replay ledger
// topic is empty, the orders topic holds only the orders, and the rejected
// order's ledger row is still dead-lettered.
func (p *pipeline) requireNotReplayed(ctx context.Context, t *testing.T, o order) {
	t.Helper()
	recs, err := p.k.ReadCommitted(ctx, p.dlq+".replayed")
	require.NoError(t, err)
	require.Empty(t, recs, "no replay ledger entry")
	recs, err = p.k.ReadCommitted(ctx, p.topic)
	require.NoError(t, err)
	require.Len(t, recs, len(p.orders), "the orders topic holds the orders only")
	require.Equal(t, sink.StatusDeadLettered, p.ledgerRow(ctx, o.EventID).Status)
}

func sign(f float64) float64 {
	if f == 0 {
		return 0
	}
	return math.Copysign(1, f)
}
