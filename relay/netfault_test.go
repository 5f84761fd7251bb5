package relay_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/relay"
)

// The network-fault tests put toxiproxy (in process, as a library) between
// the relay and Kafka and between the relay and Postgres, and break the
// network in the ways a crash test cannot: a commit whose answer never comes
// back, answers slower than the request timeout, and half-open connections
// that swallow traffic without an error. Each test lets the relay notice the
// fault by itself within a bound, heals the network, and requires that rows
// written after the heal reach Kafka (the relay resumed without an operator)
// and that a read_committed consumer sees every row exactly once.

// faultNet is one test's proxies: one per Kafka broker address (the relay's
// kgo.Dialer sends every broker connection there, so the brokers need not
// advertise the proxy) and one in front of Postgres.
type faultNet struct {
	t   *testing.T
	srv *toxiproxy.ApiServer

	mu     sync.Mutex
	kafka  map[string]*toxiproxy.Proxy // broker address -> proxy
	toxics map[string]string           // name -> JSON of the toxics every Kafka proxy carries
	pg     *toxiproxy.Proxy

	// endTxn is the EndTxn cut (see kafkaConn): cutOff, cutAfterSend or
	// cutBeforeSend; endTxnCuts counts the EndTxn requests it cut.
	endTxn     atomic.Int32
	endTxnCuts atomic.Int64
}

const (
	cutOff        int32 = iota
	cutAfterSend        // the broker gets the EndTxn, the relay never hears back
	cutBeforeSend       // the EndTxn never reaches the broker
)

func newFaultNet(t *testing.T) *faultNet {
	t.Helper()
	f := &faultNet{t: t, srv: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		kafka: map[string]*toxiproxy.Proxy{}, toxics: map[string]string{}}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.kafka {
			p.Stop()
		}
		if f.pg != nil {
			f.pg.Stop()
		}
	})
	return f
}

func (f *faultNet) proxy(name, upstream string) *toxiproxy.Proxy {
	p := toxiproxy.NewProxy(f.srv, name, "127.0.0.1:0", upstream)
	require.NoError(f.t, p.Start())
	return p
}

// kafkaProxy returns the proxy for a broker address, starting one (with the
// Kafka toxics in force) the first time the client dials that address.
func (f *faultNet) kafkaProxy(addr string) (*toxiproxy.Proxy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.kafka[addr]; ok {
		return p, nil
	}
	p := toxiproxy.NewProxy(f.srv, "kafka-"+addr, "127.0.0.1:0", addr)
	if err := p.Start(); err != nil {
		return nil, err
	}
	for _, js := range f.toxics {
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			p.Stop()
			return nil, err
		}
	}
	f.kafka[addr] = p
	return p, nil
}

// kafkaOpts route every connection of the relay's Kafka clients through the
// proxies.
func (f *faultNet) kafkaOpts(seeds []string) []kgo.Opt {
	for _, s := range seeds {
		_, err := f.kafkaProxy(s)
		require.NoError(f.t, err)
	}
	return []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.Dialer(f.dialKafka)}
}

func (f *faultNet) dialKafka(ctx context.Context, network, host string) (net.Conn, error) {
	p, err := f.kafkaProxy(host)
	if err != nil {
		return nil, fmt.Errorf("netfault: proxy for %s: %w", host, err)
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, p.Listen)
	if err != nil {
		return nil, err
	}
	return &kafkaConn{Conn: c, f: f}, nil
}

// addKafkaToxic puts a toxic on every Kafka proxy, present and future.
func (f *faultNet) addKafkaToxic(name, typ, stream string, attrs string) {
	f.t.Helper()
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"attributes":%s}`, name, typ, stream, attrs)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.toxics[name] = js
	for _, p := range f.kafka {
		_, err := p.Toxics.AddToxicJson(strings.NewReader(js))
		require.NoError(f.t, err)
	}
}

func (f *faultNet) removeKafkaToxic(name string) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.toxics, name)
	for _, p := range f.kafka {
		require.NoError(f.t, p.Toxics.RemoveToxic(context.Background(), name))
	}
}

// pgURL starts the Postgres proxy and returns dbURL pointing at it; the
// relay's admin and replication connections both go through it.
func (f *faultNet) pgURL(dbURL string) string {
	f.t.Helper()
	pc, err := pgconn.ParseConfig(dbURL)
	require.NoError(f.t, err)
	require.False(f.t, strings.HasPrefix(pc.Host, "/"), "the Postgres proxy needs a TCP server, not the socket %s", pc.Host)
	f.mu.Lock()
	f.pg = f.proxy("postgres", net.JoinHostPort(pc.Host, fmt.Sprint(pc.Port)))
	f.mu.Unlock()
	u, err := url.Parse(dbURL)
	require.NoError(f.t, err)
	u.Host = f.pg.Listen
	return u.String()
}

// kafkaConn watches the requests a Kafka client writes (each is a 4-byte
// size and then the body, which starts with the int16 API key) so that it
// can cut the connection at an EndTxn request.
type kafkaConn struct {
	net.Conn
	f *faultNet

	hdr  []byte // size and API key of the request being written, once complete
	left int    // body bytes of that request still to come
	key  int16
}

const apiKeyEndTxn = 26

func (c *kafkaConn) Write(b []byte) (int, error) {
	mode := c.f.endTxn.Load()
	endAt, startAt := -1, 0 // where in b an EndTxn request ends and the request starts
	for i := 0; i < len(b); {
		if len(c.hdr) < 6 {
			if len(c.hdr) == 0 {
				startAt = i
			}
			n := min(6-len(c.hdr), len(b)-i)
			c.hdr = append(c.hdr, b[i:i+n]...)
			i += n
			if len(c.hdr) == 6 {
				c.left = int(binary.BigEndian.Uint32(c.hdr)) - 2
				c.key = int16(binary.BigEndian.Uint16(c.hdr[4:]))
			}
			continue
		}
		n := min(c.left, len(b)-i)
		i += n
		c.left -= n
		if c.left == 0 {
			if c.key == apiKeyEndTxn && endAt < 0 {
				endAt = i
			}
			c.hdr = c.hdr[:0]
		}
	}
	if endAt < 0 || mode == cutOff {
		return c.Conn.Write(b)
	}
	c.f.endTxnCuts.Add(1)
	if mode == cutBeforeSend {
		// Send what came before the EndTxn, then drop the connection: the
		// broker never learns the relay wanted to commit.
		if startAt > 0 {
			_, _ = c.Conn.Write(b[:startAt])
		}
		_ = c.Conn.Close()
		return 0, errors.New("netfault: connection cut before an EndTxn request")
	}
	// Send the whole EndTxn and drop the connection before the answer: the
	// broker commits, the client cannot know.
	n, err := c.Conn.Write(b)
	_ = c.Conn.Close()
	return n, err
}

// replSilence is a toxiproxy toxic for the server-to-client direction of
// the Postgres proxy: while its control is armed it drops, silently, every
// byte Postgres sends on replication connections (those that answered a
// START_REPLICATION with CopyBothResponse). Postgres keeps receiving the
// relay's status updates and keeps its walsender alive; the relay hears
// nothing: a silent walsender on a half-open path. Other connections pass.
type replSilence struct {
	ID string `json:"id"`
}

type replSilenceCtl struct {
	armed   atomic.Bool
	dropped atomic.Int64 // bytes swallowed
	repl    atomic.Int64 // replication connections seen
}

var replSilenceCtls sync.Map // ID -> *replSilenceCtl

func init() { toxics.Register("outbox_repl_silence", new(replSilence)) }

// replSilenceState follows the backend message framing (type byte, int32
// length including itself) of one connection.
type replSilenceState struct {
	hdr    []byte
	left   int
	isRepl bool
}

func (*replSilence) NewState() any { return new(replSilenceState) }

func (t *replSilence) Pipe(stub *toxics.ToxicStub) {
	v, _ := replSilenceCtls.Load(t.ID)
	ctl := v.(*replSilenceCtl)
	st := stub.State.(*replSilenceState)
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			if !st.isRepl && st.scan(c.Data) {
				ctl.repl.Add(1)
			}
			if st.isRepl && ctl.armed.Load() {
				ctl.dropped.Add(int64(len(c.Data)))
				continue
			}
			stub.Output <- c
		}
	}
}

// scan follows the framing through data and reports whether it just saw a
// CopyBothResponse ('W'): the connection now streams replication.
func (s *replSilenceState) scan(data []byte) bool {
	for i := 0; i < len(data); {
		if len(s.hdr) < 5 {
			n := min(5-len(s.hdr), len(data)-i)
			s.hdr = append(s.hdr, data[i:i+n]...)
			i += n
			if len(s.hdr) == 5 {
				if s.hdr[0] == 'W' {
					s.isRepl = true
					return true
				}
				s.left = int(binary.BigEndian.Uint32(s.hdr[1:])) - 4
				if s.left == 0 {
					s.hdr = s.hdr[:0]
				}
			}
			continue
		}
		n := min(s.left, len(data)-i)
		i += n
		s.left -= n
		if s.left == 0 {
			s.hdr = s.hdr[:0]
		}
	}
	return false
}

// armReplSilence installs the replSilence toxic on the Postgres proxy and
// returns its control (disarmed).
func (f *faultNet) armReplSilence() *replSilenceCtl {
	f.t.Helper()
	ctl := &replSilenceCtl{}
	id := fmt.Sprintf("%p", ctl)
	replSilenceCtls.Store(id, ctl)
	f.t.Cleanup(func() { replSilenceCtls.Delete(id) })
	_, err := f.pg.Toxics.AddToxicJson(strings.NewReader(
		fmt.Sprintf(`{"name":"repl_silence","type":"outbox_repl_silence","stream":"downstream","attributes":{"id":%q}}`, id)))
	require.NoError(f.t, err)
	return ctl
}

// faultRelay is a relay run in this process by the test, with its own
// metrics registry to count restarted sessions.
type faultRelay struct {
	reg  *prometheus.Registry
	stop func() error
}

func startFaultRelay(t *testing.T, cfg relay.Config) *faultRelay {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	return &faultRelay{reg: reg, stop: runRelay(t, cfg)}
}

// restarts is how many sessions ended in an error so far.
func (fr *faultRelay) restarts(t *testing.T) int {
	t.Helper()
	mfs, err := fr.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "outbox_relay_session_restarts_total" {
			return int(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return 0
}

// netFaultCase is one fault: inject breaks the network, heal mends it.
type netFaultCase struct {
	// noticeWithin bounds how long the relay may take to end the session the
	// fault broke, by itself, before the network heals.
	noticeWithin time.Duration
	// restarts is how many sessions must end before the heal (more than one
	// shows the new sessions fail too, rather than hang). Defaults to 1.
	restarts     int
	inject, heal func()
	// noticed, when set, runs once the relay ended the broken session.
	noticed func()
	// kafkaOpts are extra client options for the relay.
	kafkaOpts []kgo.Opt
	// configure adjusts the relay's config.
	configure func(*relay.Config)
	// quiet stops the writer before the fault (and starts a new one after
	// the heal), so that the fault meets an idle relay.
	quiet bool
}

// runNetFault streams with a writer running, injects the fault, waits until
// the relay ends the broken session by itself, heals, and checks that the
// relay resumed and that every row is in Kafka exactly once.
func runNetFault(t *testing.T, b *testBundle, f *faultNet, tc netFaultCase) {
	t.Helper()
	cfg := b.config(t)
	cfg.KafkaOpts = append(f.kafkaOpts(b.k.Brokers), tc.kafkaOpts...)
	cfg.DatabaseURL = f.pgURL(b.url)
	// A silent Postgres must be noticed in seconds here, not the minute of
	// the default: status updates (the stream's pings) every second.
	cfg.StatusInterval = time.Second
	cfg.PostgresTimeout = 5 * time.Second
	if tc.configure != nil {
		tc.configure(&cfg)
	}
	w := startWriter(t, b.url, 10, 5, 5*time.Millisecond, 0)
	fr := startFaultRelay(t, cfg)
	b.waitRelayed(t, 200, 2*time.Minute)
	if tc.quiet {
		b.waitRelayed(t, int(w.stop()), time.Minute)
	}

	before := fr.restarts(t)
	tc.inject()
	faultAt := time.Now()
	require.Eventually(t, func() bool { return fr.restarts(t) > before }, tc.noticeWithin, 50*time.Millisecond,
		"the relay did not end the broken session within %s", tc.noticeWithin)
	noticed := time.Since(faultAt)
	if tc.restarts > 1 {
		require.Eventually(t, func() bool { return fr.restarts(t) >= before+tc.restarts }, tc.noticeWithin, 50*time.Millisecond,
			"%d sessions did not end within %s of the fault: a new session hangs", tc.restarts, tc.noticeWithin)
	}
	if tc.noticed != nil {
		tc.noticed()
	}

	// Let the relay run into the fault again (new sessions fail while the
	// network is broken) before mending it.
	time.Sleep(time.Second)
	tc.heal()
	healAt := time.Now()
	if tc.quiet {
		w = startWriter(t, b.url, 10, 5, 5*time.Millisecond, 0)
	}
	atHeal := b.countRows(t)
	// Resumed: rows committed after the heal reach Kafka without anyone
	// restarting the relay.
	b.waitRelayed(t, atHeal+100, 2*time.Minute)
	resumed := time.Since(healAt)
	w.stop()
	require.Greater(t, b.countRows(t), atHeal+100, "the writer wrote too little after the heal to show the relay resumed")
	n := b.verifyExactlyOnce(t, 2*time.Minute)
	require.ErrorIs(t, fr.stop(), context.Canceled, "Run should end only because the test stopped it")
	t.Logf("rows %d exactly once (dup 0, missing 0); fault noticed after %s, %d sessions restarted, relayed again %s after the heal",
		n, noticed.Round(time.Millisecond), fr.restarts(t)-before, resumed.Round(time.Millisecond))
}

func (b *testBundle) countRows(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox.events`).Scan(&n))
	return n
}

// TestNetFaultEndTxnCut drops the Kafka connection at the relay's EndTxn
// request, either after the broker got it (it commits, the relay cannot know)
// or before (nothing commits), on every retry, so that EndTransaction fails
// with the outcome unknown. The relay must restart from the slot and let the
// fenced producer and the checkpoint tell it what committed.
func TestNetFaultEndTxnCut(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		cut  int32
	}{{"AfterSend", cutAfterSend}, {"BeforeSend", cutBeforeSend}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			f := newFaultNet(t)
			var atCut int
			runNetFault(t, b, f, netFaultCase{
				noticeWithin: 45 * time.Second,
				inject: func() {
					atCut = len(b.readAll(t, 0, 0))
					f.endTxn.Store(mode.cut)
				},
				noticed: func() {
					if mode.cut == cutAfterSend {
						// Every EndTxn since the cut failed for the relay, yet
						// the broker committed them: the outcome really was
						// unknown, and the restart must skip what is in Kafka.
						n := len(b.readAll(t, 0, 0))
						require.Greater(t, n, atCut, "the broker committed nothing whose EndTxn answer was cut")
						t.Logf("records committed at the cut %d, when the relay gave up on the commit %d", atCut, n)
					}
				},
				heal: func() {
					f.endTxn.Store(cutOff)
					require.Positive(t, f.endTxnCuts.Load(), "no EndTxn request was cut")
				},
			})
			t.Logf("EndTxn requests cut: %d", f.endTxnCuts.Load())
		})
	}
}

// TestNetFaultKafkaLatency delays every answer from Kafka beyond the request
// timeout. RequestTimeoutOverhead is 2s here (10s by default) so the test
// stays short; the 3s latency still lets produce requests through (their
// deadline adds ProduceRequestTimeout, 10s) while EndTxn, InitProducerID and
// metadata requests time out: a commit whose outcome the relay cannot know.
func TestNetFaultKafkaLatency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := newFaultNet(t)
	runNetFault(t, b, f, netFaultCase{
		noticeWithin: 45 * time.Second,
		kafkaOpts:    []kgo.Opt{kgo.RequestTimeoutOverhead(2 * time.Second)},
		inject:       func() { f.addKafkaToxic("slow", "latency", "downstream", `{"latency":3000}`) },
		heal:         func() { f.removeKafkaToxic("slow") },
	})
}

// TestNetFaultKafkaBlackhole makes every Kafka connection half-open: bytes go
// nowhere in either direction, and no connection closes (toxiproxy's timeout
// toxic with timeout 0). Only the relay's own deadlines can notice.
func TestNetFaultKafkaBlackhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := newFaultNet(t)
	runNetFault(t, b, f, netFaultCase{
		noticeWithin: 60 * time.Second,
		inject: func() {
			f.addKafkaToxic("hole_up", "timeout", "upstream", `{"timeout":0}`)
			f.addKafkaToxic("hole_down", "timeout", "downstream", `{"timeout":0}`)
		},
		heal: func() {
			f.removeKafkaToxic("hole_up")
			f.removeKafkaToxic("hole_down")
		},
	})
}

// TestNetFaultPostgresBlackhole makes every connection to Postgres half-open
// (the admin connection the heartbeats use, the replication connection, and
// every new connection), like a server behind a dead network path. The
// sessions started during the fault must fail too, not wait forever to
// connect.
func TestNetFaultPostgresBlackhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := newFaultNet(t)
	runNetFault(t, b, f, netFaultCase{
		noticeWithin: 60 * time.Second,
		restarts:     3,
		inject: func() {
			for _, s := range []string{"upstream", "downstream"} {
				_, err := f.pg.Toxics.AddToxicJson(strings.NewReader(
					fmt.Sprintf(`{"name":"hole_%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, s, s)))
				require.NoError(t, err)
			}
		},
		heal: func() {
			for _, s := range []string{"upstream", "downstream"} {
				require.NoError(t, f.pg.Toxics.RemoveToxic(context.Background(), "hole_"+s))
			}
		},
	})
}

// TestNetFaultSilentWalsender silences only the replication connection, and
// only from Postgres to the relay: the walsender keeps receiving the relay's
// status updates (so Postgres's wal_sender_timeout never fires) and the
// heartbeats keep working on the admin connection, but nothing Postgres
// streams arrives. The relay must notice the silence by itself.
func TestNetFaultSilentWalsender(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := newFaultNet(t)
	var ctl *replSilenceCtl
	runNetFault(t, b, f, netFaultCase{
		noticeWithin: 45 * time.Second,
		inject: func() {
			require.Positive(t, ctl.repl.Load(), "the toxic saw no replication connection")
			ctl.armed.Store(true)
		},
		heal: func() {
			ctl.armed.Store(false)
			require.Positive(t, ctl.dropped.Load(), "nothing was silenced")
		},
		configure: func(*relay.Config) { ctl = f.armReplSilence() },
	})
	t.Logf("bytes silenced: %d", ctl.dropped.Load())
}

// TestNetFaultKafkaBlackholeLargeTransaction blackholes Kafka while the relay
// produces one Postgres transaction of more rows than the producer buffers
// (MaxBufferedRecords 4,096): with nothing acknowledged the buffer stays
// full, and a produce waiting for room must still give up within a bound.
func TestNetFaultKafkaBlackholeLargeTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := newFaultNet(t)
	const rows = 6000
	runNetFault(t, b, f, netFaultCase{
		noticeWithin: 60 * time.Second,
		// No writer and no heartbeat during the fault: the large transaction
		// is all the relay has to do, so it is producing, not committing,
		// when it meets the blackhole.
		quiet:     true,
		configure: func(cfg *relay.Config) { cfg.HeartbeatInterval = time.Hour },
		inject: func() {
			f.addKafkaToxic("hole_up", "timeout", "upstream", `{"timeout":0}`)
			f.addKafkaToxic("hole_down", "timeout", "downstream", `{"timeout":0}`)
			b.writeLarge(t, rows)
		},
		heal: func() {
			f.removeKafkaToxic("hole_up")
			f.removeKafkaToxic("hole_down")
		},
	})
}

// writeLarge commits one transaction of n rows of a single new aggregate, in
// sequence order.
func (b *testBundle) writeLarge(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	agg := fmt.Sprintf("large-%d", writers.Add(1))
	batch := &pgx.Batch{}
	for i := range n {
		p, err := json.Marshal(payload{Agg: agg, Seq: i})
		require.NoError(t, err)
		batch.Queue(`INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES ($1, 'Order', $2, 'order.changed', $3)`,
			uuid.Must(uuid.NewV7()), agg, p)
	}
	require.NoError(t, pgx.BeginFunc(ctx, b.conn, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() }))
}

// TestNetFaultQuietWalsenderIsAlive is the other side of the silence check:
// with nothing written and no heartbeats a healthy walsender streams no data,
// only keepalives (answers to the relay's status updates, which ask for a
// reply once the stream is quiet, or sent because the relay's confirmed
// position is behind what it sent). The relay must keep its session for
// many times PostgresTimeout.
func TestNetFaultQuietWalsenderIsAlive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := newFaultNet(t)
	cfg := b.config(t)
	cfg.KafkaOpts = f.kafkaOpts(b.k.Brokers)
	cfg.DatabaseURL = f.pgURL(b.url)
	cfg.StatusInterval = time.Second
	cfg.PostgresTimeout = 3 * time.Second
	cfg.HeartbeatInterval = time.Hour
	fr := startFaultRelay(t, cfg)
	b.writeLarge(t, 10)
	b.waitRelayed(t, 10, 2*time.Minute)
	time.Sleep(5 * cfg.PostgresTimeout)
	require.Zero(t, fr.restarts(t), "a quiet but healthy walsender was taken for a dead one")
	b.writeLarge(t, 10)
	n := b.verifyExactlyOnce(t, time.Minute)
	require.Equal(t, 20, n)
	require.Zero(t, fr.restarts(t))
	require.ErrorIs(t, fr.stop(), context.Canceled)
}
