package debezium_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/demo/debezium"
	"github.com/outboxrelay/outbox/internal/demo/procstat"
	"github.com/outboxrelay/outbox/internal/testkit/kafkatest"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testBundle is one test's database (outbox schema migrated), Apache Kafka
// broker, target topic and Connect worker.
type testBundle struct {
	url    string
	conn   *pgx.Conn
	kafka  *kafkatest.Apache
	adm    *kadm.Client
	topic  string
	group  string
	slot   string
	worker *debezium.Worker
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := &testBundle{
		url:   pgtest.NewDatabase(t),
		slot:  fmt.Sprintf("dbz_%d_%08x", os.Getpid(), rand.Uint32()),
		group: fmt.Sprintf("outbox-connect-test-%08x", rand.Uint32()),
		topic: fmt.Sprintf("dbz.orders.%08x", rand.Uint32()),
	}
	m, err := migrations.Open(ctx, b.url, "outbox", nil)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	b.conn, err = pgx.Connect(ctx, b.url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.conn.Close(context.Background()) })

	t0 := time.Now()
	b.kafka = kafkatest.StartApacheT(t, kafkatest.ApacheConfig{})
	t.Logf("Apache Kafka up in %s", time.Since(t0).Round(time.Millisecond))
	cl, err := kgo.NewClient(b.kafka.Opts()...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	b.adm = kadm.NewClient(cl)
	// The broker does not create topics: the target exists before the
	// connector writes, as for the relay.
	_, err = b.adm.CreateTopic(ctx, 3, 1, nil, b.topic)
	require.NoError(t, err)

	dir := t.TempDir()
	t0 = time.Now()
	b.worker, err = debezium.Start(ctx, debezium.Config{
		Bootstrap: strings.Join(b.kafka.Plaintext, ","),
		Dir:       dir,
		Group:     b.group,
		// A test worker needs far less than the benchmark's 2g.
		Heap: "-Xms128m -Xmx512m",
	})
	require.NoError(t, err, "this test needs Java 17+ and Maven (or the cached jars) for Debezium on Kafka Connect")
	t.Logf("Connect worker healthy in %s at %s", time.Since(t0).Round(time.Millisecond), b.worker.URL())
	t.Cleanup(func() {
		if t.Failed() {
			logTail(t, filepath.Join(dir, "connect.log"), 60)
		}
		require.NoError(t, b.worker.Stop())
	})
	return b
}

func logTail(t *testing.T, path string, n int) {
	out, err := os.ReadFile(path)
	if err != nil {
		t.Logf("connect log: %v", err)
		return
	}
	lines := strings.Split(string(out), "\n")
	t.Logf("%s (tail):\n%s", path, strings.Join(lines[max(0, len(lines)-n):], "\n"))
}

// row is one outbox event as the test wrote it.
type row struct {
	aggregateID string
	payload     string
}

// insert writes txns transactions of per events each to the outbox and
// returns them by event id.
func (b *testBundle) insert(t *testing.T, txns, per int) map[string]row {
	t.Helper()
	ctx := context.Background()
	rows := make(map[string]row, txns*per)
	for i := range txns {
		tx, err := b.conn.Begin(ctx)
		require.NoError(t, err)
		for j := range per {
			id := uuid.Must(uuid.NewV7()).String()
			r := row{aggregateID: fmt.Sprintf("order-%d", (i*per+j)%97), payload: fmt.Sprintf(`{"n":%d,"txn":%d}`, i*per+j, i)}
			_, err := tx.Exec(ctx, `INSERT INTO outbox.events (event_id, aggregate_type, aggregate_id, event_type, topic, payload)
				VALUES ($1, 'order', $2, 'order.created', $3, $4)`, id, r.aggregateID, b.topic, []byte(r.payload))
			require.NoError(t, err)
			rows[id] = r
		}
		require.NoError(t, tx.Commit(ctx))
	}
	return rows
}

// consume reads the target topic read_committed from the start until want
// records arrived or timeout passed, and returns them.
func (b *testBundle) consume(t *testing.T, want int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(b.kafka.Opts(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(b.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got []*kgo.Record
	for len(got) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		for _, e := range fs.Errors() {
			require.NoError(t, e.Err, "fetch %s/%d", e.Topic, e.Partition)
		}
		got = append(got, fs.Records()...)
	}
	// Anything past want would be a duplicate: give it a moment to show.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	got = append(got, cl.PollFetches(ctx2).Records()...)
	return got
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// TestOutboxConnectorStreamsEveryEventOnce runs Debezium's Postgres
// connector with the outbox EventRouter, exactly-once, on a real Connect
// worker and a real broker: 2,000 events written in 200 transactions after
// the connector started arrive on the routed topic once each, read
// read_committed, keyed by aggregate id, the payload as the value and the
// event id in Debezium's id header; and the task wrote them with a
// transactional producer.
func TestOutboxConnectorStreamsEveryEventOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A slot older than its publication would stream nothing: refused.
	early := b.slot + "_early"
	_, err := b.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, early)
	require.NoError(t, err)
	err = b.worker.AddOutboxConnector(ctx, debezium.Connector{Name: "early", DatabaseURL: b.url, Slot: early, Publication: "made_later"})
	require.ErrorContains(t, err, "create the publication before the slot")
	_, err = b.conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, early)
	require.NoError(t, err)

	const name = "outbox"
	t0 := time.Now()
	require.NoError(t, b.worker.AddOutboxConnector(ctx, debezium.Connector{
		Name:        name,
		DatabaseURL: b.url,
		Slot:        b.slot,
		Publication: "outbox_events",
		Table:       "outbox.events",
	}))
	t.Logf("connector and task RUNNING in %s", time.Since(t0).Round(time.Millisecond))
	var slots int
	require.NoError(t, b.conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND plugin = 'pgoutput'`, b.slot).Scan(&slots))
	require.Equal(t, 1, slots, "a RUNNING task has made its slot")

	start := time.Now()
	rows := b.insert(t, 200, 10)
	got := b.consume(t, len(rows), 90*time.Second)
	t.Logf("%d events read back %s after the first insert", len(got), time.Since(start).Round(time.Millisecond))

	seen := map[string]int{}
	for _, r := range got {
		id, ok := header(r, "id")
		require.True(t, ok, "record at %s/%d@%d has no id header", r.Topic, r.Partition, r.Offset)
		seen[id]++
		want, ok := rows[id]
		require.True(t, ok, "id header %q is no event the test wrote", id)
		require.Equal(t, want.aggregateID, string(r.Key), "key of %s", id)
		require.Equal(t, want.payload, string(r.Value), "value of %s", id)
		et, _ := header(r, "event_type")
		require.Equal(t, "order.created", et, "event_type header of %s", id)
	}
	require.Len(t, seen, len(rows), "distinct event ids read back")
	require.Len(t, got, len(rows), "records read back (more means duplicates)")

	// Exactly-once source: the task's producer is transactional, with the
	// KIP-618 id GROUP-CONNECTOR-TASK.
	txnID := b.group + "-" + name + "-0"
	txns, err := b.adm.DescribeTransactions(ctx, txnID)
	require.NoError(t, err)
	txn, err := txns.On(txnID, nil)
	require.NoError(t, err)
	require.NoError(t, txn.Err, "transactional id %s", txnID)
	t.Logf("transactional id %s: producer id %d epoch %d, state %s", txnID, txn.ProducerID, txn.ProducerEpoch, txn.State)

	st, err := b.worker.ConnectorStatus(ctx, name)
	require.NoError(t, err)
	require.Equal(t, "RUNNING", st.Tasks[0].State)
	u, err := procstat.Read(b.worker.PID())
	require.NoError(t, err)
	t.Logf("worker pid %d: CPU %s, RSS %d MiB, peak RSS %d MiB", b.worker.PID(), u.CPU, u.RSSKB/1024, u.PeakRSSKB/1024)

	require.NoError(t, b.worker.DeleteConnector(ctx, name))
	var active bool
	require.Eventually(t, func() bool {
		err := b.conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&active)
		return err == nil && !active
	}, 30*time.Second, 100*time.Millisecond, "a deleted connector releases its slot")
}

// TestOutboxConfig checks the mapping of the outbox columns and of the
// database URL without a worker.
func TestOutboxConfig(t *testing.T) {
	t.Parallel()
	c := debezium.Connector{Name: "bench", DatabaseURL: "postgres://relay:s%40cret@127.0.0.1:6543/orders?sslmode=require", Slot: "s1"}
	cfg, err := debezium.OutboxConfig(c, true)
	require.NoError(t, err)
	for k, v := range map[string]string{
		"database.hostname": "127.0.0.1", "database.port": "6543", "database.user": "relay", "database.password": "s@cret",
		"database.dbname": "orders", "database.sslmode": "require", "slot.name": "s1",
		"publication.name": "outbox_events", "publication.autocreate.mode": "disabled", "table.include.list": "outbox.events",
		"snapshot.mode": "no_data", "exactly.once.support": "required", "transaction.boundary": "poll",
		"transforms.outbox.table.field.event.id": "event_id", "transforms.outbox.table.field.event.key": "aggregate_id",
		"transforms.outbox.route.by.field": "topic", "transforms.outbox.route.topic.replacement": "${routedByValue}",
	} {
		require.Equal(t, v, cfg[k], k)
	}
	require.NotContains(t, cfg, "max.batch.size", "Debezium's default batching unless Tuned")

	c.Tuned, c.Publication = true, "mine"
	cfg, err = debezium.OutboxConfig(c, false)
	require.NoError(t, err)
	require.Equal(t, "filtered", cfg["publication.autocreate.mode"])
	require.Equal(t, "mine", cfg["publication.name"])
	for k, v := range debezium.TunedSettings() {
		require.Equal(t, v, cfg[k], k)
	}

	for _, bad := range []string{"host=127.0.0.1 dbname=x", "postgres:///orders?host=/tmp", "postgres://127.0.0.1/orders", "postgres://u@127.0.0.1/"} {
		_, err := debezium.OutboxConfig(debezium.Connector{Name: "n", Slot: "s", DatabaseURL: bad}, true)
		require.Error(t, err, bad)
	}
}
