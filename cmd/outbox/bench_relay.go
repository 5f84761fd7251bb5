package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/internal/embedkafka"
	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/pgcluster"
	"github.com/outboxrelay/outbox/migrations"
)

func init() { benches["relay"] = benchRelay }

// benchRelay measures the relay (issue 3): (a) backlog drain of single-event
// transactions, (b) the same backlog drained by a bare pglogrepl loop, (c)
// commit-to-visible latency at a fixed offered rate through a read_committed
// consumer, (d) relay CPU per event and peak RSS, and the peak RSS for one
// huge transaction. The relay runs as a child `outbox relay` process so its
// CPU and RSS are its own, not the embedded broker's or the load generator's.
func benchRelay(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "bench relay")
	dbURL := fs.String("database-url", envOr("OUTBOX_DATABASE_URL", ""), "Postgres server to use (a database is created on it); default: a throwaway local cluster (env OUTBOX_DATABASE_URL)")
	var kc kafkaconn.Config
	kc.Register(fs)
	var (
		events   = fs.Int("events", 1000000, "backlog size: single-event transactions to drain (0 skips the drain and baseline)")
		payload  = fs.Int("payload", 500, "payload bytes per event")
		rate     = fs.Int("rate", 1000, "steady phase: offered events per second (0 skips)")
		duration = fs.Duration("duration", 20*time.Second, "steady phase: how long to offer load")
		huge     = fs.Int("huge-events", 1000000, "events in one Postgres transaction for the RSS check (0 skips)")
		maxBatch = fs.Int("max-batch-events", 5000, "relay --max-batch-events")
		linger   = fs.Duration("linger", 0, "relay --linger")
		profile  = fs.String("relay-cpuprofile", "", "write the relay's CPU profile of the drain phase to this file")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	out := e.stdout
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }

	// Postgres.
	base := *dbURL
	if base == "" {
		c, err := pgcluster.Start(ctx, pgcluster.Config{DisableContainer: true})
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = c.Stop(sctx)
		}()
		base = c.URL()
	}
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return fmt.Errorf("bench relay: connect: %w", err)
	}
	dbName := fmt.Sprintf("bench_relay_%d", time.Now().Unix())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+dbName); err != nil {
		return fmt.Errorf("bench relay: create database: %w", err)
	}
	_ = admin.Close(ctx)
	url := withDatabaseName(base, dbName)
	m, err := migrations.Open(ctx, url, "outbox", nil)
	if err != nil {
		return err
	}
	if _, err := m.Up(ctx); err != nil {
		return err
	}
	_ = m.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, benchSQL); err != nil {
		return fmt.Errorf("bench relay: helpers: %w", err)
	}

	// Kafka.
	if len(kc.Brokers) == 0 {
		c, err := embedkafka.Start(embedkafka.Config{})
		if err != nil {
			return err
		}
		defer c.Close()
		kc.Brokers = c.Brokers()
		say("kafka: embedded kfake in the bench process (%s)", strings.Join(kc.Brokers, ","))
	}
	kopts, err := kc.Opts()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	kcl, err := kgo.NewClient(kopts...)
	if err != nil {
		return err
	}
	defer kcl.Close()
	adm := kadm.NewClient(kcl)
	suffix := time.Now().Format("150405")
	topic, ckpt := "bench.relay.events."+suffix, "bench.relay.checkpoints."+suffix
	compact := "compact"
	if _, err := adm.CreateTopic(ctx, 3, -1, nil, topic); err != nil {
		return fmt.Errorf("bench relay: create topic: %w", err)
	}
	if _, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, ckpt); err != nil {
		return fmt.Errorf("bench relay: create topic: %w", err)
	}
	say("machine: %d CPUs; Postgres, Kafka, load generator, consumer and relay all on this box; other work on the machine contends for CPU", numCPU())

	const slot, baseSlot = "bench_relay", "bench_baseline"
	for _, s := range []string{slot, baseSlot} {
		if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s); err != nil {
			return fmt.Errorf("bench relay: create slot: %w", err)
		}
	}
	tmp, err := os.MkdirTemp("", "bench-relay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	relayArgs := []string{"relay", "--database-url", url, "--schema", "outbox", "--slot", slot, "--brokers", strings.Join(kc.Brokers, ","),
		"--checkpoint-topic", ckpt, "--topic-template", topic, "--record-topic-template", topic, "--max-batch-events", fmt.Sprint(*maxBatch),
		"--heartbeat", "2s", "--linger", linger.String()}

	if *events > 0 {
		say("\n(a,b) backlog: %d single-event transactions, %d-byte payloads", *events, *payload)
		t0 := time.Now()
		if _, err := conn.Exec(ctx, `CALL bench_fill($1, $2)`, *events, *payload); err != nil {
			return fmt.Errorf("bench relay: fill backlog: %w", err)
		}
		say("  backlog written in %s", time.Since(t0).Round(time.Millisecond))

		bt, bcpu, err := benchBaseline(ctx, url, baseSlot, *events)
		if err != nil {
			return err
		}
		baseRate := float64(*events) / bt.Seconds()
		say("  (b) bare pglogrepl loop (parse and discard): %s, %.0f events/s, %.2f µs CPU/event (in-process)", bt.Round(time.Millisecond), baseRate, bcpu.Seconds()*1e6/float64(*events))

		drainArgs := relayArgs
		if *profile != "" {
			drainArgs = append(slices.Clone(relayArgs), "--cpuprofile", *profile)
		}
		ch, err := startRelayChild(ctx, tmp, "drain", drainArgs)
		if err != nil {
			return err
		}
		start := ch.started
		n, err := consumeCount(ctx, kopts, topic, *events, 10*time.Minute)
		took := time.Since(start)
		ru, rerr := ch.stop()
		if err != nil {
			return fmt.Errorf("bench relay: drain: %w (relay log: %s)", err, ch.log)
		}
		if rerr != nil {
			return rerr
		}
		rate := float64(n) / took.Seconds()
		say("  (a) relay drain to read_committed consumer: %s, %.0f events/s = %.2f of the bare baseline", took.Round(time.Millisecond), rate, rate/baseRate)
		say("  (d) relay CPU %.2fs = %.2f µs/event; peak RSS %.1f MB", ru.cpu.Seconds(), ru.cpu.Seconds()*1e6/float64(n), float64(ru.maxRSSKB)/1024)
	} else {
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, baseSlot); err != nil {
			return err
		}
	}
	if *events > 0 {
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, baseSlot); err != nil {
			return err
		}
	}

	if *rate > 0 {
		say("\n(c) steady load: %d events/s offered for %s, single-event transactions", *rate, *duration)
		steadyArgs := relayArgs
		if *profile != "" {
			steadyArgs = append(slices.Clone(relayArgs), "--memprofile", *profile+".steady.mem", "--cpuprofile", *profile+".steady")
		}
		ch, err := startRelayChild(ctx, tmp, "steady", steadyArgs)
		if err != nil {
			return err
		}
		lat, sent, err := steadyLoad(ctx, url, kopts, topic, *rate, *duration, *payload)
		ru, rerr := ch.stop()
		if err != nil {
			return fmt.Errorf("bench relay: steady: %w (relay log: %s)", err, ch.log)
		}
		if rerr != nil {
			return rerr
		}
		slices.Sort(lat)
		say("  sent %d, seen %d; commit-to-visible latency p50 %s, p99 %s, p99.9 %s, max %s", sent, len(lat),
			pct(lat, 50), pct(lat, 99), pct(lat, 99.9), lat[len(lat)-1].Round(10*time.Microsecond))
		say("  (d) relay CPU %.2fs over the phase = %.2f µs/event (includes idle heartbeats and start-up); peak RSS %.1f MB",
			ru.cpu.Seconds(), ru.cpu.Seconds()*1e6/float64(max(sent, 1)), float64(ru.maxRSSKB)/1024)
	}

	if *huge > 0 {
		say("\n(e) one Postgres transaction of %d events, %d-byte payloads", *huge, *payload)
		before, err := topicEnd(ctx, adm, topic)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if _, err := conn.Exec(ctx, `SELECT bench_huge($1, $2)`, *huge, *payload); err != nil {
			return fmt.Errorf("bench relay: huge transaction: %w", err)
		}
		say("  written in %s", time.Since(t0).Round(time.Millisecond))
		ch, err := startRelayChild(ctx, tmp, "huge", relayArgs)
		if err != nil {
			return err
		}
		n, err := consumeCountFrom(ctx, kopts, topic, before, *huge, 15*time.Minute)
		took := time.Since(ch.started)
		ru, rerr := ch.stop()
		if err != nil {
			return fmt.Errorf("bench relay: huge: %w (relay log: %s)", err, ch.log)
		}
		if rerr != nil {
			return rerr
		}
		say("  relayed %d events in %s (%.0f events/s, split across Kafka transactions); relay CPU %.2f µs/event; peak RSS %.1f MB",
			n, took.Round(time.Millisecond), float64(n)/took.Seconds(), ru.cpu.Seconds()*1e6/float64(n), float64(ru.maxRSSKB)/1024)
	}
	return nil
}

// benchSQL installs the load helpers in the bench database.
const benchSQL = `
CREATE FUNCTION bench_uuid() RETURNS uuid LANGUAGE sql VOLATILE AS $$
	SELECT (lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7' ||
		substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid $$;
CREATE PROCEDURE bench_fill(n int, size int) LANGUAGE plpgsql AS $$
DECLARE p bytea := convert_to('{"pad":"' || repeat('x', greatest(size - 10, 0)) || '"}', 'UTF8');
BEGIN
	FOR i IN 1..n LOOP
		INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload)
		VALUES (bench_uuid(), 'Order', 'o-' || (i % 1000), 'order.changed', p);
		COMMIT;
	END LOOP;
END $$;
CREATE FUNCTION bench_huge(n int, size int) RETURNS void LANGUAGE sql AS $$
	INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload)
	SELECT bench_uuid(), 'Order', 'h-' || (i % 1000), 'order.line',
		convert_to('{"pad":"' || repeat('x', greatest(size - 10, 0)) || '"}', 'UTF8')
	FROM generate_series(1, n) AS i $$;
`

// benchBaseline drains slot with a bare pglogrepl loop that parses every
// message and discards it, until it has seen want commits.
func benchBaseline(ctx context.Context, url, slot string, want int) (time.Duration, time.Duration, error) {
	pcfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return 0, 0, err
	}
	pcfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return 0, 0, fmt.Errorf("bench relay: baseline connect: %w", err)
	}
	defer conn.Close(context.Background())
	cpu0 := selfCPU()
	start := time.Now()
	if err := pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: []string{
		"proto_version '1'", "publication_names 'outbox_events'", "binary 'true'"}}); err != nil {
		return 0, 0, fmt.Errorf("bench relay: baseline start: %w", err)
	}
	commits := 0
	var last pglogrepl.LSN
	next := time.Now().Add(time.Second)
	for commits < want {
		if time.Now().After(next) {
			_ = pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: last})
			next = time.Now().Add(time.Second)
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return 0, 0, fmt.Errorf("bench relay: baseline receive: %w", err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			return 0, 0, err
		}
		lm, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			return 0, 0, err
		}
		if c, ok := lm.(*pglogrepl.CommitMessage); ok {
			commits++
			last = c.TransactionEndLSN
		}
	}
	return time.Since(start), selfCPU() - cpu0, nil
}

// relayChild is an `outbox relay` child process.
type relayChild struct {
	cmd     *exec.Cmd
	log     string
	started time.Time
}

type childUsage struct {
	cpu      time.Duration
	maxRSSKB int64
}

func startRelayChild(ctx context.Context, dir, name string, args []string) (*relayChild, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "OUTBOX_LOG_LEVEL=warn")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench relay: start relay: %w", err)
	}
	go func() { _ = cmd.Wait(); f.Close() }()
	return &relayChild{cmd: cmd, log: logPath, started: start}, nil
}

// stop sends SIGTERM, waits for a clean exit and returns the child's usage.
// Peak RSS comes from /proc/PID/status VmHWM read just before the signal:
// rusage's maxrss of a child started with vfork counts the parent's RSS at
// the fork (Linux records the old mm's high-water mark at exec).
func (c *relayChild) stop() (childUsage, error) {
	hwm := vmHWM(c.cmd.Process.Pid)
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for c.cmd.ProcessState == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ps := c.cmd.ProcessState
	if ps == nil {
		_ = c.cmd.Process.Kill()
		return childUsage{}, errors.New("bench relay: relay did not stop within 30s of SIGTERM")
	}
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return childUsage{}, errors.New("bench relay: no rusage")
	}
	return childUsage{
		cpu:      time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		maxRSSKB: hwm,
	}, nil
}

// vmHWM is a process's peak resident set in KiB, or 0 when unknown.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	return 0
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func topicEnd(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

func consumeCount(ctx context.Context, kopts []kgo.Opt, topic string, want int, timeout time.Duration) (int, error) {
	return consumeCountFrom(ctx, kopts, topic, nil, want, timeout)
}

// consumeCountFrom counts records read_committed from the given offsets (the
// start when nil) until want arrived.
func consumeCountFrom(ctx context.Context, kopts []kgo.Opt, topic string, from map[int32]int64, want int, timeout time.Duration) (int, error) {
	opts := append(append([]kgo.Opt{}, kopts...), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if from == nil {
		opts = append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	} else {
		ps := map[int32]kgo.Offset{}
		for p, o := range from {
			ps[p] = kgo.NewOffset().At(o)
		}
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: ps}))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	n := 0
	for n < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return n, fmt.Errorf("saw %d of %d events: %w", n, want, ctx.Err())
		}
		n += fs.NumRecords()
	}
	return n, nil
}

// steadyLoad offers rate single-event transactions per second for d and
// measures, per event, the time from the writer's COMMIT returning to a
// read_committed consumer receiving it.
func steadyLoad(ctx context.Context, url string, kopts []kgo.Opt, topic string, rate int, d time.Duration, size int) ([]time.Duration, int, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, kopts...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(50*time.Millisecond))...)
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	// The consumer may see an event before its writer has noted the commit
	// time, so both sides record times and they are joined at the end.
	var committed, seen sync.Map // event id -> time.Time
	var seenN atomic.Int64
	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				for _, h := range r.Headers {
					if h.Key == envelope.HeaderEventID {
						seen.Store(string(h.Value), now)
						seenN.Add(1)
					}
				}
			})
		}
	}()
	time.Sleep(2 * time.Second) // relay start-up and consumer positioning

	const writers = 4
	payload := []byte(`{"pad":"` + strings.Repeat("x", max(size-10, 0)) + `"}`)
	var sent atomic.Int64
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	total := int(d / interval)
	var wg sync.WaitGroup
	var werr atomic.Value
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				werr.Store(err)
				return
			}
			defer conn.Close(context.Background())
			for i := w; i < total; i += writers {
				if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
					time.Sleep(wait)
				}
				id := uuid.Must(uuid.NewV7())
				if _, err := conn.Exec(ctx, `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES ($1, 'Order', $2, 'order.changed', $3)`,
					id, fmt.Sprintf("s-%d", i%1000), payload); err != nil {
					werr.Store(err)
					return
				}
				committed.Store(id.String(), time.Now())
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := werr.Load().(error); ok && err != nil {
		stopConsumer()
		<-consumerDone
		return nil, 0, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && seenN.Load() < sent.Load() {
		time.Sleep(50 * time.Millisecond)
	}
	stopConsumer()
	<-consumerDone
	var lat []time.Duration
	committed.Range(func(k, v any) bool {
		if at, ok := seen.Load(k); ok {
			lat = append(lat, at.(time.Time).Sub(v.(time.Time)))
		}
		return true
	})
	if len(lat) == 0 {
		return nil, 0, errors.New("no event reached the consumer")
	}
	return lat, int(sent.Load()), nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i].Round(10 * time.Microsecond)
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

// withDatabaseName replaces the database of a postgres:// URL.
func withDatabaseName(url, name string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil || !strings.Contains(url, "://") {
		return url + " dbname=" + name
	}
	_ = cfg
	i := strings.Index(url, "://")
	rest := url[i+3:]
	q := ""
	if j := strings.IndexByte(rest, '?'); j >= 0 {
		rest, q = rest[:j], rest[j:]
	}
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		rest = rest[:j]
	}
	return url[:i+3] + rest + "/" + name + q
}
