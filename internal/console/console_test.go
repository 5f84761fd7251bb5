package console_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
				if g.Group == p.stalled || g.Group == sinkGroup && g.Lag == 0 {
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
