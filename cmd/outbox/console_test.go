package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/console"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/sink"
)

// TestConsoleShowsTheCLIFigures runs `outbox console` (the built binary,
// read-only) and the CLI's `lag`, `sink status` and `dlq list` on the same
// data, and checks that the pages' JSON says what the commands print, and
// that the read-only console refuses a replay.
func TestConsoleShowsTheCLIFigures(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := migratedDatabase(ctx, t)
	k := kafkatest.New(t)
	prefix := fmt.Sprintf("con%06x", rand.Uint32()>>8)
	orders, dlq, group := prefix+".orders", prefix+".orders.dlt", prefix+"-stalled"
	k.CreateTopic(orders, 2, nil)
	k.CreateTopic(dlq, 1, nil)

	// Orders nobody consumed past offset 0, and a group that left: STOP.
	cl, err := kgo.NewClient(k.Opts()...)
	require.NoError(t, err)
	defer cl.Close()
	for i := range 4 {
		r := &kgo.Record{Topic: orders, Partition: int32(i % 2), Key: []byte(fmt.Sprintf("order-%d", i)), Value: []byte(`{}`)}
		require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
	}
	offs := kadm.Offsets{}
	offs.AddOffset(orders, 0, 0, -1)
	offs.AddOffset(orders, 1, 0, -1)
	resp, err := k.Admin().CommitOffsets(ctx, group, offs)
	require.NoError(t, err)
	require.NoError(t, resp.Error())

	// Two dead letters, as the sink writes them.
	for i := range 2 {
		id := uuid.Must(uuid.NewV7())
		d := envelope.DeadLetter{OriginTopic: orders, OriginPartition: 0, OriginOffset: int64(i), Stage: "sink", StageName: "payments",
			ErrorClass: "http_422", ErrorMessage: "card declined", Attempt: 1, At: time.Now().UTC()}
		r := &kgo.Record{Topic: dlq, Key: []byte(fmt.Sprintf("order-%d", i)), Value: []byte(`{}`),
			Headers: []kgo.RecordHeader{{Key: envelope.HeaderEventID, Value: []byte(id.String())}}}
		for _, h := range d.Headers() {
			r.Headers = append(r.Headers, kgo.RecordHeader(h))
		}
		require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
	}

	// Ledger rows of two endpoints in four statuses.
	conn, err := pgx.Connect(ctx, db)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	for i, row := range []struct{ endpoint, status string }{
		{"payments", "succeeded"}, {"payments", "succeeded"}, {"payments", "failed"},
		{"shipping", "dead_lettered"}, {"shipping", "retrying"},
	} {
		id := uuid.Must(uuid.NewV7())
		_, err := conn.Exec(ctx, `INSERT INTO outbox.sink_ledger (endpoint, event_id, status, attempts, idempotency_key)
			VALUES ($1, $2, $3, 1, $4)`, row.endpoint, id, row.status, id.String())
		require.NoError(t, err, "ledger row %d", i)
	}

	// The console, as a process.
	addr := freeAddr(t)
	var stderr syncBuffer
	cmd := exec.Command(outboxBinary(t), "console", "--database-url", db, "--brokers", strings.Join(k.Brokers, ","),
		"--listen", addr, "--interval", "300ms", "--window", "1", "--group", group, "--dlq-topic", dlq)
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("console stderr:\n%s", stderr.String())
		}
	})
	base := "http://" + addr
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 45*time.Second, 100*time.Millisecond, "the console serves /readyz")

	var page struct {
		Lag         console.LagReport  `json:"lag"`
		Ledger      []sink.StatusCount `json:"ledger"`
		DeadLetters []console.DLQCount `json:"dead_letters"`
		Errors      []string           `json:"errors"`
	}
	getPage(t, base+"/?format=json", &page)
	require.Empty(t, page.Errors)

	// outbox lag: exit 3 (the group is ERR), the same figures.
	r := outboxBin(t, nil, "lag", "--json", "--window", "1", "--group", group, "--brokers", strings.Join(k.Brokers, ","))
	require.Equal(t, exitLagAlert, r.code, r.stderr)
	var lag console.LagReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &lag), r.stdout)
	require.Len(t, lag.Groups, 1)
	require.Len(t, page.Lag.Groups, 1)
	want, got := lag.Groups[0], page.Lag.Groups[0]
	require.Equal(t, "ERR", got.Status)
	require.Equal(t, []any{want.Group, want.Status, want.Worst, want.State, want.Members, want.Lag},
		[]any{got.Group, got.Status, got.Worst, got.State, got.Members, got.Lag})
	require.InDelta(t, want.LagSeconds, got.LagSeconds+lag.At.Sub(page.Lag.At).Seconds(), 1.0, "lag seconds, less the time between the samples")
	require.Len(t, got.Partitions, len(want.Partitions))
	for i := range want.Partitions {
		w, g := want.Partitions[i], got.Partitions[i]
		w.LagSeconds, g.LagSeconds = 0, 0
		require.Equal(t, w, g)
	}

	// outbox sink status: the pipeline's 24 h and the ledger page's window.
	r = outboxBin(t, nil, "sink", "status", "--format", "json", "--database-url", db)
	require.Equal(t, 0, r.code, r.stderr)
	var status []sink.StatusCount
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &status), r.stdout)
	require.Len(t, status, 4)
	require.Equal(t, status, page.Ledger)
	var ledger console.LedgerView
	getPage(t, base+"/ledger?window=24h&format=json", &ledger)
	require.Equal(t, status, ledger.Counts)

	// outbox dlq list: the same letters, and their count on the pipeline.
	r = outboxBin(t, nil, "dlq", "list", "--json", "--topic", dlq, "--brokers", strings.Join(k.Brokers, ","))
	require.Equal(t, 0, r.code, r.stderr)
	// The CLI's letters carry headers as an object and the value as JSON:
	// read the fields both have.
	type cliLetter struct {
		Partition   int32                  `json:"partition"`
		Offset      int64                  `json:"offset"`
		Key         string                 `json:"key"`
		EventID     string                 `json:"event_id"`
		ReplayCount int                    `json:"replay_count"`
		DeadLetter  console.DeadLetterView `json:"dead_letter"`
	}
	var cliLetters []cliLetter
	for _, line := range lines(r.stdout) {
		var l cliLetter
		require.NoError(t, json.Unmarshal([]byte(line), &l), line)
		cliLetters = append(cliLetters, l)
	}
	require.Len(t, cliLetters, 2)
	require.Equal(t, []console.DLQCount{{Topic: dlq, Count: 2}}, page.DeadLetters)
	var list console.DLQListView
	getPage(t, base+"/dlq?topic="+dlq+"&format=json", &list)
	require.Len(t, list.Letters, len(cliLetters))
	for i, w := range cliLetters {
		g := list.Letters[i]
		require.Equal(t, []any{w.Partition, w.Offset, w.Key, w.EventID, w.ReplayCount, w.DeadLetter.OriginTopic, w.DeadLetter.ErrorClass, w.DeadLetter.ErrorMessage},
			[]any{g.Partition, g.Offset, g.Key, g.EventID, g.ReplayCount, g.DeadLetter.OriginTopic, g.DeadLetter.ErrorClass, g.DeadLetter.ErrorMessage})
	}

	// Read-only: a replay is refused and nothing is written.
	resp2, err := http.PostForm(base+"/dlq/replay", url.Values{"topic": {dlq}, "mode": {"replay"}, "confirm": {"yes"}})
	require.NoError(t, err)
	body, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	require.Equal(t, http.StatusForbidden, resp2.StatusCode)
	require.Contains(t, string(body), "--allow-actions")
	td, err := k.Admin().ListTopics(ctx, dlq+".replayed")
	require.NoError(t, err)
	require.Error(t, td[dlq+".replayed"].Err, "no replay ledger topic was created")

	// SIGTERM: a clean stop.
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("the console did not stop within 20s of SIGTERM")
	}
	require.Contains(t, stderr.String(), "outbox console: serving on http://"+addr)
}

// TestConsoleFlags: actions need a token, a token needs actions, and
// --check validates without starting.
func TestConsoleFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"console", "--database-url", "postgres://x@127.0.0.1:1/db", "--brokers", "127.0.0.1:1", "--allow-actions"}, 2, "--allow-actions needs --token"},
		{[]string{"console", "--database-url", "postgres://x@127.0.0.1:1/db", "--brokers", "127.0.0.1:1", "--token", "t"}, 2, "--token without --allow-actions"},
		{[]string{"console", "--brokers", "127.0.0.1:1"}, 2, "--database-url"},
		{[]string{"console", "--database-url", "postgres://x@127.0.0.1:1/db", "--brokers", "127.0.0.1:1", "--interval", "0s"}, 2, "--interval"},
		{[]string{"console", "--database-url", "postgres://x@127.0.0.1:1/db", "--brokers", "127.0.0.1:1", "--stage-timeout", "0s"}, 2, "--stage-timeout"},
		{[]string{"console", "--database-url", "postgres://x@127.0.0.1:1/db", "--brokers", "127.0.0.1:1", "--stage-metrics", "127.0.0.1:9101,127.0.0.1:9102", "--check"}, 0, "127.0.0.1:9102"},
		{[]string{"console", "--database-url", "postgres://x:pw@127.0.0.1:1/db", "--brokers", "127.0.0.1:1", "--allow-actions", "--token", "hush", "--check"}, 0, "allow-actions"},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		require.Equal(t, tc.code, code, "%v: %s%s", tc.args, out.String(), errOut.String())
		require.Contains(t, out.String()+errOut.String(), tc.want, "%v", tc.args)
		require.NotContains(t, out.String()+errOut.String(), "hush", "%v: the token is a secret", tc.args)
	}
}

// getPage fetches a console URL's JSON into v.
func getPage(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", u, body)
	require.NoError(t, json.Unmarshal(body, v), "%s: %s", u, body)
}

// TestRelayServesConsole: `outbox relay --console ADDR` serves the
// read-only console beside the relay, and its pipeline page shows the
// relay's own slot held by it; the console refuses actions.
func TestRelayServesConsole(t *testing.T) {
	t.Parallel()
	b, ctx := setupOps(t)
	url := migratedDatabase(ctx, t)
	slot := fmt.Sprintf("console_%d_%s", os.Getpid(), b.prefix)
	addr := freeAddr(t)
	relayStage := startStage(t, nil, "relay", "--database-url", url, "--brokers", strings.Join(b.k.Brokers, ","), "--slot", slot,
		"--checkpoint-topic", b.prefix+".ckpt", "--transactional-id", "outbox-relay-"+slot, "--console", addr)
	var page struct {
		Slots []struct {
			Name   string `json:"slot_name"`
			Active bool   `json:"active"`
		} `json:"slots"`
	}
	eventually(t, time.Minute, "the console shows slot "+slot+" active", func() error {
		relayStage.running(t)
		resp, err := http.Get("http://" + addr + "/?format=json")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, body)
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("%v: %s", err, body)
		}
		for _, s := range page.Slots {
			if s.Name == slot && s.Active {
				return nil
			}
		}
		return fmt.Errorf("slot %s not shown active: %s", slot, body)
	})
	resp, err := http.Post("http://"+addr+"/dlq/replay", "application/x-www-form-urlencoded", strings.NewReader("topic=x"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a stage's console is read-only")
	relayStage.stop(t, 30*time.Second)
}

// TestConsoleScrapesStageMetrics runs `outbox relay --metrics-addr A` and
// `outbox console --stage-metrics A,B` (B answers nothing) as processes: the
// pipeline page's JSON shows the relay instance as a relay, active on its
// slot, with a rate from the second scrape on, and B as an error naming it.
func TestConsoleScrapesStageMetrics(t *testing.T) {
	t.Parallel()
	b, ctx := setupOps(t)
	db := migratedDatabase(ctx, t)
	slot := fmt.Sprintf("scrape_%d_%s", os.Getpid(), b.prefix)
	metricsAddr, deadAddr, addr := freeAddr(t), freeAddr(t), freeAddr(t)
	brokers := strings.Join(b.k.Brokers, ",")
	relayStage := startStage(t, nil, "relay", "--database-url", db, "--brokers", brokers, "--slot", slot,
		"--checkpoint-topic", b.prefix+".ckpt", "--transactional-id", "outbox-relay-"+slot, "--metrics-addr", metricsAddr)
	con := startStage(t, nil, "console", "--database-url", db, "--brokers", brokers, "--listen", addr, "--interval", "300ms",
		"--stage-metrics", metricsAddr+",http://"+deadAddr+"/metrics", "--stage-timeout", "500ms")
	var page struct {
		Stages []console.StageInstance `json:"stages"`
	}
	eventually(t, time.Minute, "the console shows the relay active on "+slot, func() error {
		relayStage.running(t)
		con.running(t)
		resp, err := http.Get("http://" + addr + "/?format=json")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		page.Stages = nil
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("%v: %s", err, body)
		}
		if len(page.Stages) != 2 || len(page.Stages[0].Relays) != 1 || page.Stages[0].Relays[0].Role != console.RoleActive ||
			page.Stages[0].Relays[0].Events.PerSecond == nil {
			return fmt.Errorf("not yet: %s", body)
		}
		return nil
	})
	rel, dead := page.Stages[0], page.Stages[1]
	require.Equal(t, "http://"+metricsAddr+"/metrics", rel.URL)
	require.Equal(t, []string{console.KindRelay}, rel.Kinds)
	require.Equal(t, slot, rel.Relays[0].Slot)
	require.Empty(t, rel.Error)
	require.Equal(t, "http://"+deadAddr+"/metrics", dead.URL)
	require.Contains(t, dead.Error, deadAddr)
	con.stop(t, 20*time.Second)
	relayStage.stop(t, 30*time.Second)
}
