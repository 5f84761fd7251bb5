package comparebench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/demo/apachekafka"
	"github.com/outboxrelay/outbox/internal/demo/debezium"
	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/internal/demo/procstat"
	"github.com/outboxrelay/outbox/migrations"
)

// bench is one Run's shared parts.
type bench struct {
	cfg       Config
	out       io.Writer
	url       string
	conn      *pgx.Conn
	kopts     []kgo.Opt
	adm       *kadm.Client
	brokerPID int
	systems   map[string]system
	tmp       string
	keepTmp   bool
}

// run is one workload on one system.
type run struct {
	b     *bench
	id    string
	url   string
	slot  string
	topic string
}

// Run measures every workload on every system, Rounds times, and returns the
// report. out receives progress and the table (nil discards them).
func Run(ctx context.Context, cfg Config, out io.Writer) (_ *Report, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if out == nil {
		out = io.Discard
	}
	b := &bench{cfg: cfg, out: out, systems: map[string]system{}}
	stop, err := b.setup(ctx)
	defer func() {
		b.keepTmp = err != nil
		stop()
	}()
	if err != nil {
		return nil, err
	}
	rep := newReport(cfg)
	b.say("machine: %d CPUs, load %s; Postgres, Kafka, the system, the load generator and the consumer all on this box", rep.Machine.CPUs, rep.Machine.LoadAvg)
	for round := 1; round <= cfg.Rounds; round++ {
		for _, wname := range cfg.Workloads {
			w := cfg.workload(wname)
			order := slices.Clone(cfg.Systems)
			// Rotate so no system always runs first (on a cold cache) or last.
			k := (round - 1) % len(order)
			order = append(order[k:], order[:k]...)
			for _, sname := range order {
				res, err := b.runOne(ctx, round, w, sname)
				if err != nil {
					return rep, fmt.Errorf("bench compare: round %d, %s on %s: %w", round, wname, sname, err)
				}
				b.say("  round %d %-14s %-15s %s", round, wname, sname, res.line())
				rep.Runs = append(rep.Runs, res)
			}
		}
	}
	rep.summarize()
	b.say("")
	rep.Table(out)
	if cfg.JSON != "" {
		if err := rep.WriteJSON(cfg.JSON); err != nil {
			return rep, err
		}
		b.say("runs written to %s", cfg.JSON)
	}
	if cfg.PNG != "" {
		if err := rep.WritePNG(cfg.PNG); err != nil {
			return rep, err
		}
		b.say("plot written to %s", cfg.PNG)
	}
	return rep, nil
}

func (b *bench) say(format string, a ...any) { fmt.Fprintf(b.out, format+"\n", a...) }

// setup reaches or starts Postgres, Kafka and the Connect worker, and
// returns what undoes it, also after an error.
func (b *bench) setup(ctx context.Context) (func(), error) {
	var closers []func()
	stop := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	var err error
	if b.tmp, err = os.MkdirTemp("", "bench-compare-"); err != nil {
		return stop, err
	}
	closers = append(closers, func() {
		if b.keepTmp {
			b.say("logs kept in %s", b.tmp)
			return
		}
		_ = os.RemoveAll(b.tmp)
	})

	pg, err := pgcluster.Start(ctx, pgcluster.Config{URL: b.cfg.DatabaseURL, DisableContainer: true})
	if err != nil {
		return stop, err
	}
	closers = append(closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pg.Stop(sctx)
	})
	if b.url, err = pg.CreateDatabase(ctx, fmt.Sprintf("bench_compare_%d", time.Now().Unix())); err != nil {
		return stop, fmt.Errorf("bench compare: %w", err)
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
	if _, err := b.conn.Exec(ctx, fillSQL); err != nil {
		return stop, fmt.Errorf("bench compare: load helpers: %w", err)
	}

	brokers := b.cfg.Brokers
	b.brokerPID = b.cfg.BrokerPID
	if len(brokers) == 0 {
		b.say("kafka: starting one Apache Kafka node from Maven Central jars")
		k, err := apachekafka.Start(ctx, apachekafka.Config{Dir: filepath.Join(b.tmp, "kafka")})
		if err != nil {
			return stop, err
		}
		closers = append(closers, func() { _ = k.Stop() })
		brokers = k.Plaintext
		pid, err := os.ReadFile(filepath.Join(k.Dir, "node-1", "pid"))
		if err != nil {
			return stop, fmt.Errorf("bench compare: broker pid: %w", err)
		}
		b.brokerPID, _ = strconv.Atoi(strings.TrimSpace(string(pid)))
	}
	b.kopts = []kgo.Opt{kgo.SeedBrokers(brokers...)}
	kcl, err := kgo.NewClient(b.kopts...)
	if err != nil {
		return stop, err
	}
	closers = append(closers, kcl.Close)
	b.adm = kadm.NewClient(kcl)

	for _, s := range b.cfg.Systems {
		switch s {
		case SystemRelay:
			bin := b.cfg.Binary
			if bin == "" {
				if bin, err = os.Executable(); err != nil {
					return stop, err
				}
			}
			b.systems[s] = &relaySystem{bin: bin, brokers: strings.Join(brokers, ","), maxLatency: b.cfg.MaxLatency, logDir: b.tmp}
		case SystemDebezium, SystemDebeziumTuned:
			var w *debezium.Worker
			for _, other := range b.systems {
				if d, ok := other.(*debeziumSystem); ok {
					w = d.w
				}
			}
			if w == nil {
				b.say("debezium: starting a Kafka Connect worker (distributed, exactly.once.source.support=enabled)")
				if w, err = debezium.Start(ctx, debezium.Config{Bootstrap: strings.Join(brokers, ","), Dir: filepath.Join(b.tmp, "connect")}); err != nil {
					return stop, err
				}
				closers = append(closers, func() { _ = w.Stop() })
			}
			b.systems[s] = &debeziumSystem{w: w, tuned: s == SystemDebeziumTuned}
		}
	}
	return stop, nil
}

// runOne runs workload w once on system sname, on a fresh slot and topic.
func (b *bench) runOne(ctx context.Context, round int, w workload, sname string) (*Result, error) {
	sys := b.systems[sname]
	id := fmt.Sprintf("cmp.%s.%s.%d.%d", strings.ReplaceAll(sname, "-", ""), strings.ReplaceAll(w.name, "-", ""), round, time.Now().UnixMilli()%1_000_000)
	r := &run{b: b, id: id, url: b.url, slot: strings.ReplaceAll(id, ".", "_"), topic: id}
	res := &Result{Round: round, Workload: w.name, System: sname, OfferedRate: w.rate * w.rows}
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	defer r.cleanup()
	want := w.events(b.cfg.SteadyDuration)
	if !w.steady() {
		t0 := time.Now()
		if _, err := b.conn.Exec(ctx, `CALL compare_fill($1, $2, $3, $4)`, w.txns, w.rows, b.cfg.Payload, r.topic); err != nil {
			return nil, fmt.Errorf("fill backlog: %w", err)
		}
		res.WriteSeconds = time.Since(t0).Seconds()
	}
	c, err := startCounter(ctx, b.kopts, r.topic, sys.idHeader())
	if err != nil {
		return nil, err
	}
	defer c.close()
	broker0 := b.brokerCPU()
	started := time.Now()
	p, err := sys.start(ctx, r)
	if err != nil {
		return nil, err
	}
	var committed map[string]time.Time
	var loadErr error
	var loadTook time.Duration
	if w.steady() {
		committed, loadTook, loadErr = steadyLoad(ctx, r, w, b.cfg.SteadyDuration, b.cfg.Payload)
		want = len(committed)
	}
	waitErr := c.wait(ctx, want, b.cfg.Timeout)
	u, stopErr := p.stop(ctx)
	if err := errors.Join(loadErr, waitErr, stopErr); err != nil {
		return nil, err
	}
	seen := c.result()
	res.Events = want
	res.Seen, res.Distinct = seen.total, len(seen.first)
	res.Duplicates = seen.total - len(seen.first)
	if res.Distinct != want {
		return nil, fmt.Errorf("a read_committed consumer saw %d distinct events of %d committed", res.Distinct, want)
	}
	if w.steady() {
		// The writers' own time: on a busy machine they may fall behind
		// the offered rate, and the rate reached is what the system carried.
		res.Seconds = loadTook.Seconds()
		lat := make([]time.Duration, 0, len(committed))
		for id, at := range committed {
			lat = append(lat, seen.first[id].Sub(at))
		}
		slices.Sort(lat)
		res.P50Ms, res.P99Ms, res.P999Ms = ms(pct(lat, 50)), ms(pct(lat, 99)), ms(pct(lat, 99.9))
	} else {
		// From the first event seen to the last: the drain itself, not the
		// system's start-up, which StartupSeconds gives.
		res.Seconds = seen.last.Sub(seen.firstAt).Seconds()
		res.StartupSeconds = seen.firstAt.Sub(started).Seconds()
	}
	res.EventsPerSec = float64(want) / max(res.Seconds, 1e-3)
	res.CPUMicrosPerEvent = u.CPU.Seconds() * 1e6 / float64(want)
	res.PeakRSSMB = float64(u.PeakRSSKB) / 1024
	if b.brokerPID > 0 {
		res.BrokerCPUMicrosPerEvent = (b.brokerCPU() - broker0).Seconds() * 1e6 / float64(want)
	}
	return res, nil
}

func (b *bench) brokerCPU() time.Duration {
	if b.brokerPID == 0 {
		return 0
	}
	u, err := procstat.Read(b.brokerPID)
	if err != nil {
		return 0
	}
	return u.CPU
}

// prepare makes the run's topics (three partitions, as the relay's deploy
// files do) and its slot, so a backlog committed next is the slot's.
func (r *run) prepare(ctx context.Context) error {
	b := r.b
	if _, err := b.conn.Exec(ctx, `TRUNCATE outbox.events`); err != nil {
		return fmt.Errorf("truncate the outbox: %w", err)
	}
	if _, err := b.adm.CreateTopic(ctx, 3, -1, nil, r.topic); err != nil {
		return fmt.Errorf("create topic %s: %w", r.topic, err)
	}
	compact := "compact"
	if _, err := b.adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, r.topic+".checkpoints"); err != nil {
		return fmt.Errorf("create topic %s.checkpoints: %w", r.topic, err)
	}
	if _, err := b.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, r.slot); err != nil {
		return fmt.Errorf("create slot %s: %w", r.slot, err)
	}
	return nil
}

// cleanup drops the run's slot (once its reader has let go) and topics.
func (r *run) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		if _, err := r.b.conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, r.slot); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	_, _ = r.b.adm.DeleteTopics(ctx, r.topic, r.topic+".checkpoints")
}

// waitSlotActive waits until a walsender reads the run's slot, or exited
// closes (the process died).
func (r *run) waitSlotActive(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		var active bool
		if err := r.b.conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, r.slot).Scan(&active); err != nil {
			return fmt.Errorf("slot %s: %w", r.slot, err)
		}
		if active {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before it read the slot")
		case <-ctx.Done():
			return fmt.Errorf("slot %s not read within 2m: %w", r.slot, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// steadyLoad commits w.rate transactions of w.rows events per second for d
// and returns each event's commit time by id, and how long the writers took.
func steadyLoad(ctx context.Context, r *run, w workload, d time.Duration, size int) (map[string]time.Time, time.Duration, error) {
	writers := max(4, w.rate/500)
	payload := []byte(`{"pad":"` + strings.Repeat("x", max(size-10, 0)) + `"}`)
	interval := time.Second / time.Duration(w.rate)
	total := int(d / interval)
	start := time.Now()
	var mu sync.Mutex
	committed := make(map[string]time.Time, total*w.rows)
	var wg sync.WaitGroup
	var werr atomic.Value
	for i := range writers {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, r.url)
			if err != nil {
				werr.Store(err)
				return
			}
			defer conn.Close(context.Background())
			ids := make([]string, w.rows)
			for n := i; n < total; n += writers {
				if wait := time.Until(start.Add(time.Duration(n) * interval)); wait > 0 {
					time.Sleep(wait)
				}
				batch := &pgx.Batch{}
				for j := range ids {
					id := uuid.Must(uuid.NewV7())
					ids[j] = id.String()
					batch.Queue(`INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, topic, payload) VALUES ($1, 'Order', $2, 'order.changed', $3, $4)`,
						id, fmt.Sprintf("s-%d", n%1000), r.topic, payload)
				}
				var err error
				if w.rows == 1 {
					_, err = conn.Exec(ctx, batch.QueuedQueries[0].SQL, batch.QueuedQueries[0].Arguments...)
				} else {
					err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() })
				}
				if err != nil {
					werr.Store(err)
					return
				}
				at := time.Now()
				mu.Lock()
				for _, id := range ids {
					committed[id] = at
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if err, ok := werr.Load().(error); ok && err != nil {
		return nil, took, fmt.Errorf("steady load: %w", err)
	}
	return committed, took, nil
}

// counter is a read_committed consumer of a run's topic that notes when it
// first saw each event id, and how many records it saw in all.
type counter struct {
	cl     *kgo.Client
	header string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	first   map[string]time.Time
	total   int
	firstAt time.Time
	last    time.Time
}

type seenEvents struct {
	first         map[string]time.Time
	total         int
	firstAt, last time.Time
}

func startCounter(ctx context.Context, kopts []kgo.Opt, topic, header string) (*counter, error) {
	cl, err := kgo.NewClient(append(slices.Clone(kopts), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &counter{cl: cl, header: header, cancel: cancel, done: make(chan struct{}), first: map[string]time.Time{}}
	go func() {
		defer close(c.done)
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			c.mu.Lock()
			fs.EachRecord(func(rec *kgo.Record) {
				c.total++
				if c.firstAt.IsZero() {
					c.firstAt = now
				}
				c.last = now
				for _, h := range rec.Headers {
					if h.Key == c.header {
						id := strings.Trim(string(h.Value), `"`)
						if _, ok := c.first[id]; !ok {
							c.first[id] = now
						}
					}
				}
			})
			c.mu.Unlock()
		}
	}()
	return c, nil
}

// wait returns once want distinct events arrived and a second more brought
// no record (a duplicate would come then), or fails at timeout.
func (c *counter) wait(ctx context.Context, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		n, last := len(c.first), c.last
		c.mu.Unlock()
		if n >= want && time.Since(last) > time.Second {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("a read_committed consumer saw %d of %d events within %s", n, want, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *counter) result() seenEvents {
	c.mu.Lock()
	defer c.mu.Unlock()
	return seenEvents{first: c.first, total: c.total, firstAt: c.firstAt, last: c.last}
}

func (c *counter) close() {
	c.cancel()
	<-c.done
	c.cl.Close()
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// fillSQL installs the backlog writer: txns transactions of rows events,
// UUIDv7 ids (the table is partitioned by them), routed by the topic column.
const fillSQL = `
CREATE FUNCTION compare_uuid() RETURNS uuid LANGUAGE sql VOLATILE AS $$
	SELECT (lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7' ||
		substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid $$;
CREATE PROCEDURE compare_fill(txns int, rows_per int, size int, topic text) LANGUAGE plpgsql AS $$
DECLARE p bytea := convert_to('{"pad":"' || repeat('x', greatest(size - 10, 0)) || '"}', 'UTF8');
BEGIN
	FOR t IN 1..txns LOOP
		INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, topic, payload)
		SELECT compare_uuid(), 'Order', 'o-' || ((t * rows_per + i) % 1000), 'order.changed', topic, p
		FROM generate_series(1, rows_per) AS i;
		COMMIT;
	END LOOP;
END $$;
`
