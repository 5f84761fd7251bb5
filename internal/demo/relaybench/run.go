package relaybench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/demo/embedkafka"
	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/migrations"
)

// Result holds the figures of the phases that ran; a skipped phase is nil.
type Result struct {
	// CPUs is the machine's processor count.
	CPUs   int
	Drain  *Drain
	Steady *Steady
	Huge   *Huge
}

// Usage is a relay child process's CPU time and peak resident set.
type Usage struct {
	CPU       time.Duration
	PeakRSSKB int64
}

// Drain is phases (a), (b) and (d) on the backlog.
type Drain struct {
	// Events is the backlog size.
	Events int
	// Baseline and BaselineCPU are the bare pglogrepl loop's time and CPU.
	Baseline, BaselineCPU time.Duration
	// Relay is the time from the relay's start until a read_committed
	// consumer had seen the whole backlog.
	Relay time.Duration
	// Usage is the relay's, over the phase.
	Usage Usage
}

// Steady is phase (c): latency at a fixed offered rate.
type Steady struct {
	// Sent is how many events were committed.
	Sent int
	// Latencies are commit-to-visible times of the events seen, sorted.
	Latencies []time.Duration
	// Usage is the relay's over the phase, start-up and idle heartbeats included.
	Usage Usage
}

// Huge is phase (e): one big Postgres transaction.
type Huge struct {
	Events int
	Took   time.Duration
	Usage  Usage
}

// bench is one run's connections and names.
type bench struct {
	cfg       Config
	out       io.Writer
	url       string
	conn      *pgx.Conn
	kopts     []kgo.Opt
	adm       *kadm.Client
	topic     string
	tmp       string
	keepLogs  bool
	relayArgs []string
}

const slot, baseSlot = "bench_relay", "bench_baseline"

// Run measures the phases Config asks for and returns their figures. out
// receives each phase's figures as the phase ends (a whole run takes
// minutes); nil discards them. The error is for a bench that could not run
// or a phase that failed; the relay's log is then named in it and kept.
func Run(ctx context.Context, cfg Config, out io.Writer) (_ *Result, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if out == nil {
		out = io.Discard
	}
	b := &bench{cfg: cfg, out: out}
	stop, err := b.setup(ctx)
	defer func() {
		// An error names a relay log: keep it.
		b.keepLogs = err != nil
		stop()
	}()
	if err != nil {
		return nil, err
	}
	res := &Result{CPUs: numCPU()}
	b.say("machine: %d CPUs; Postgres, Kafka, load generator, consumer and relay all on this box; other work on the machine contends for CPU", res.CPUs)
	if cfg.Events > 0 {
		if res.Drain, err = b.drain(ctx); err != nil {
			return res, err
		}
	}
	if _, err := b.conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, baseSlot); err != nil {
		return res, err
	}
	if cfg.Rate > 0 {
		if res.Steady, err = b.steady(ctx); err != nil {
			return res, err
		}
	}
	if cfg.HugeEvents > 0 {
		if res.Huge, err = b.huge(ctx); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (b *bench) say(format string, a ...any) { fmt.Fprintf(b.out, format+"\n", a...) }

// setup starts or reaches Postgres and Kafka, creates the bench database,
// topics and slots, and returns what undoes it (also after an error).
func (b *bench) setup(ctx context.Context) (func(), error) {
	var closers []func()
	stop := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}

	// Postgres.
	pg, err := pgcluster.Start(ctx, pgcluster.Config{URL: b.cfg.DatabaseURL, DisableContainer: true})
	if err != nil {
		return stop, err
	}
	closers = append(closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pg.Stop(sctx)
	})
	if b.url, err = pg.CreateDatabase(ctx, fmt.Sprintf("bench_relay_%d", time.Now().Unix())); err != nil {
		return stop, fmt.Errorf("bench relay: %w", err)
	}
	m, err := migrations.Open(ctx, b.url, "outbox", nil)
	if err != nil {
		return stop, err
	}
	_, err = m.Up(ctx)
	_ = m.Close()
	if err != nil {
		return stop, err
	}
	if b.conn, err = pgx.Connect(ctx, b.url); err != nil {
		return stop, err
	}
	closers = append(closers, func() { _ = b.conn.Close(context.Background()) })
	if _, err := b.conn.Exec(ctx, benchSQL); err != nil {
		return stop, fmt.Errorf("bench relay: helpers: %w", err)
	}

	// Kafka.
	kc := b.cfg.Kafka
	if len(kc.Brokers) == 0 {
		c, err := embedkafka.Start(embedkafka.Config{})
		if err != nil {
			return stop, err
		}
		closers = append(closers, c.Close)
		kc.Brokers = c.Brokers()
		b.say("kafka: embedded kfake in the bench process (%s)", strings.Join(kc.Brokers, ","))
	}
	if b.kopts, err = kc.Opts(); err != nil {
		return stop, err
	}
	kcl, err := kgo.NewClient(b.kopts...)
	if err != nil {
		return stop, err
	}
	closers = append(closers, kcl.Close)
	b.adm = kadm.NewClient(kcl)
	suffix := time.Now().Format("150405")
	b.topic = "bench.relay.events." + suffix
	ckpt := "bench.relay.checkpoints." + suffix
	compact := "compact"
	if _, err := b.adm.CreateTopic(ctx, 3, -1, nil, b.topic); err != nil {
		return stop, fmt.Errorf("bench relay: create topic: %w", err)
	}
	if _, err := b.adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, ckpt); err != nil {
		return stop, fmt.Errorf("bench relay: create topic: %w", err)
	}

	for _, s := range []string{slot, baseSlot} {
		if _, err := b.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s); err != nil {
			return stop, fmt.Errorf("bench relay: create slot: %w", err)
		}
	}
	if b.tmp, err = os.MkdirTemp("", "bench-relay-"); err != nil {
		return stop, err
	}
	closers = append(closers, func() {
		if !b.keepLogs {
			_ = os.RemoveAll(b.tmp)
		}
	})
	b.relayArgs = []string{"relay", "--database-url", b.url, "--schema", "outbox", "--slot", slot, "--brokers", strings.Join(kc.Brokers, ","),
		"--checkpoint-topic", ckpt, "--topic-template", b.topic, "--record-topic-template", b.topic,
		"--heartbeat", "2s", "--linger", b.cfg.Linger.String(), "--max-latency", b.cfg.MaxLatency.String()}
	if b.cfg.MaxBatchEvents > 0 {
		b.relayArgs = append(b.relayArgs, "--max-batch-events", fmt.Sprint(b.cfg.MaxBatchEvents))
	}
	return stop, nil
}

// drain is phases (a), (b) and (d): the backlog drained by the bare loop,
// then by the relay to a read_committed consumer.
func (b *bench) drain(ctx context.Context) (*Drain, error) {
	n, size := b.cfg.Events, b.cfg.Payload
	b.say("\n(a,b) backlog: %d single-event transactions, %d-byte payloads", n, size)
	t0 := time.Now()
	if _, err := b.conn.Exec(ctx, `CALL bench_fill($1, $2)`, n, size); err != nil {
		return nil, fmt.Errorf("bench relay: fill backlog: %w", err)
	}
	b.say("  backlog written in %s", time.Since(t0).Round(time.Millisecond))

	d := &Drain{Events: n}
	var err error
	if d.Baseline, d.BaselineCPU, err = baseline(ctx, b.url, baseSlot, n); err != nil {
		return nil, err
	}
	baseRate := float64(n) / d.Baseline.Seconds()
	b.say("  (b) bare pglogrepl loop (parse and discard): %s, %.0f events/s, %.2f µs CPU/event (in-process)", d.Baseline.Round(time.Millisecond), baseRate, d.BaselineCPU.Seconds()*1e6/float64(n))

	args := b.relayArgs
	if b.cfg.RelayCPUProfile != "" {
		args = append(slices.Clone(args), "--cpuprofile", b.cfg.RelayCPUProfile)
	}
	ch, err := b.startRelay(ctx, "drain", args)
	if err != nil {
		return nil, err
	}
	seen, err := consumeCountFrom(ctx, b.kopts, b.topic, nil, n, 10*time.Minute)
	d.Relay = time.Since(ch.started)
	u, rerr := ch.stop()
	if err != nil {
		return nil, fmt.Errorf("bench relay: drain: %w (relay log: %s)", err, ch.log)
	}
	if rerr != nil {
		return nil, rerr
	}
	d.Usage = u
	rate := float64(seen) / d.Relay.Seconds()
	b.say("  (a) relay drain to read_committed consumer: %s, %.0f events/s = %.2f of the bare baseline", d.Relay.Round(time.Millisecond), rate, rate/baseRate)
	b.say("  (d) relay CPU %.2fs = %.2f µs/event; peak RSS %.1f MB", u.CPU.Seconds(), u.CPU.Seconds()*1e6/float64(seen), float64(u.PeakRSSKB)/1024)
	return d, nil
}

// steady is phase (c): Rate events per second for Duration, each event's
// commit-to-visible time measured.
func (b *bench) steady(ctx context.Context) (*Steady, error) {
	b.say("\n(c) steady load: %d events/s offered for %s, single-event transactions", b.cfg.Rate, b.cfg.Duration)
	args := b.relayArgs
	if p := b.cfg.RelayCPUProfile; p != "" {
		args = append(slices.Clone(args), "--memprofile", p+".steady.mem", "--cpuprofile", p+".steady")
	}
	ch, err := b.startRelay(ctx, "steady", args)
	if err != nil {
		return nil, err
	}
	lat, sent, err := steadyLoad(ctx, b.url, b.kopts, b.topic, b.cfg.Rate, b.cfg.Duration, b.cfg.Payload)
	u, rerr := ch.stop()
	if err != nil {
		return nil, fmt.Errorf("bench relay: steady: %w (relay log: %s)", err, ch.log)
	}
	if rerr != nil {
		return nil, rerr
	}
	slices.Sort(lat)
	b.say("  sent %d, seen %d; commit-to-visible latency p50 %s, p99 %s, p99.9 %s, max %s", sent, len(lat),
		pct(lat, 50), pct(lat, 99), pct(lat, 99.9), lat[len(lat)-1].Round(10*time.Microsecond))
	b.say("  (d) relay CPU %.2fs over the phase = %.2f µs/event (includes idle heartbeats and start-up); peak RSS %.1f MB",
		u.CPU.Seconds(), u.CPU.Seconds()*1e6/float64(max(sent, 1)), float64(u.PeakRSSKB)/1024)
	return &Steady{Sent: sent, Latencies: lat, Usage: u}, nil
}

// huge is phase (e): one Postgres transaction of HugeEvents events, relayed
// in parts.
func (b *bench) huge(ctx context.Context) (*Huge, error) {
	n, size := b.cfg.HugeEvents, b.cfg.Payload
	b.say("\n(e) one Postgres transaction of %d events, %d-byte payloads", n, size)
	before, err := topicEnd(ctx, b.adm, b.topic)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if _, err := b.conn.Exec(ctx, `SELECT bench_huge($1, $2)`, n, size); err != nil {
		return nil, fmt.Errorf("bench relay: huge transaction: %w", err)
	}
	b.say("  written in %s", time.Since(t0).Round(time.Millisecond))
	ch, err := b.startRelay(ctx, "huge", b.relayArgs)
	if err != nil {
		return nil, err
	}
	seen, err := consumeCountFrom(ctx, b.kopts, b.topic, before, n, 15*time.Minute)
	took := time.Since(ch.started)
	u, rerr := ch.stop()
	if err != nil {
		return nil, fmt.Errorf("bench relay: huge: %w (relay log: %s)", err, ch.log)
	}
	if rerr != nil {
		return nil, rerr
	}
	b.say("  relayed %d events in %s (%.0f events/s, split across Kafka transactions); relay CPU %.2f µs/event; peak RSS %.1f MB",
		seen, took.Round(time.Millisecond), float64(seen)/took.Seconds(), u.CPU.Seconds()*1e6/float64(seen), float64(u.PeakRSSKB)/1024)
	return &Huge{Events: seen, Took: took, Usage: u}, nil
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

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}
