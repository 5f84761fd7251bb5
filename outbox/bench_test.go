package outbox_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/internal/demo/writerbench"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/outbox"
)

var (
	benchOnce    sync.Once
	benchCluster *pgcluster.Cluster
	benchURL     string
	benchErr     error
)

// benchDatabase is a migrated database on a server with fsync on, as in
// production: the test clusters run with fsync off, which would make every
// commit free and overstate what three more statements cost.
func benchDatabase(b *testing.B) string {
	benchOnce.Do(func() {
		ctx := context.Background()
		url := os.Getenv(pgtest.EnvDatabaseURL)
		if url == "" {
			c, err := pgtest.Start(ctx, pgcluster.Config{Settings: map[string]string{"fsync": "on", "full_page_writes": "on"}})
			if err != nil {
				benchErr = err
				return
			}
			benchCluster, url = c, c.URL() // stopped by TestMain
		}
		m, err := migrations.Open(ctx, url, "", nil)
		if err != nil {
			benchErr = err
			return
		}
		defer m.Close()
		if _, err := m.Up(ctx); err != nil {
			benchErr = err
			return
		}
		benchURL = url
	})
	if benchErr != nil {
		b.Fatalf("benchmark needs Postgres: %v", benchErr)
	}
	return benchURL
}

// BenchmarkOrderTx compares an order service's transaction alone (BEGIN, a
// one-row INSERT, COMMIT) with the same transaction that also claims an
// idempotency key, writes a ~500-byte order.created event and stores the
// response, at 1 and 16 concurrent writers: one statement at a time
// ("outbox") and pipelined in one Batch ("outbox-batch"). Report the ns/op ratio.
func BenchmarkOrderTx(b *testing.B) {
	url := benchDatabase(b)
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	pcfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_one_row_orders (id text PRIMARY KEY, sku text NOT NULL, amount_cents bigint NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	w, err := outbox.New(outbox.Config{})
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(fmt.Sprintf(`{"order_id":"%%s","sku":"book-123","amount_cents":1299,"note":%q}`, strings.Repeat("x", 420)))
	var seq atomic.Int64
	run := fmt.Sprint(time.Now().UnixNano())

	plain := func() error {
		id := fmt.Sprintf("%s-%d", run, seq.Add(1))
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		if _, err := tx.Exec(ctx, `INSERT INTO bench_one_row_orders VALUES ($1, 'book-123', 1299)`, id); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	withOutbox := func() error {
		id := fmt.Sprintf("%s-%d", run, seq.Add(1))
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		key := outbox.Key{Key: id}
		if _, err := w.ClaimKey(ctx, tx, key, "fp"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO bench_one_row_orders VALUES ($1, 'book-123', 1299)`, id); err != nil {
			return err
		}
		if _, err := w.Write(ctx, tx, outbox.Event{AggregateType: "order", AggregateID: id, EventType: "order.created",
			Payload: []byte(fmt.Sprintf(string(payload), id))}); err != nil {
			return err
		}
		if err := w.CompleteKey(ctx, tx, key, outbox.Response{StatusCode: 201, Body: []byte(`{"id":"` + id + `"}`)}); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	batched := func() error {
		id := fmt.Sprintf("%s-%d", run, seq.Add(1))
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		batch := w.NewBatch()
		if err := batch.ClaimKey(outbox.Key{Key: id}, "fp"); err != nil {
			return err
		}
		batch.Queue(`INSERT INTO bench_one_row_orders VALUES ($1, 'book-123', 1299)`, id)
		if _, err := batch.Write(ctx, outbox.Event{AggregateType: "order", AggregateID: id, EventType: "order.created",
			Payload: []byte(fmt.Sprintf(string(payload), id))}); err != nil {
			return err
		}
		if err := batch.CompleteKey(outbox.Response{StatusCode: 201, Body: []byte(`{"id":"` + id + `"}`)}); err != nil {
			return err
		}
		if _, err := batch.Run(ctx, tx); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	for _, writers := range []int{1, 16} {
		for _, c := range []struct {
			name string
			fn   func() error
		}{{"plain", plain}, {"outbox", withOutbox}, {"outbox-batch", batched}} {
			b.Run(fmt.Sprintf("writers=%d/%s", writers, c.name), func(b *testing.B) {
				var next atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, writers)
				b.ResetTimer()
				for range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if err := c.fn(); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkRealisticOrderTx is `outbox bench writer` as a Go benchmark: an
// order row and three line items (internal/demo/writerbench), without the
// outbox and with it (the Idempotency-Key claim, a ~460-byte order.created
// event and the stored response), at 1 and 16 concurrent writers, statement
// by statement and pipelined. ns/op is wall time over transactions, so at 16
// writers it is the inverse of throughput. Each with-outbox case reports
// ratio: its ns/op over the without-outbox case's just before it.
func BenchmarkRealisticOrderTx(b *testing.B) {
	url := benchDatabase(b)
	ctx := context.Background()
	orders, err := writerbench.Open(ctx, url, 16)
	if err != nil {
		b.Fatal(err)
	}
	defer orders.Close()
	for _, writers := range []int{1, 16} {
		for _, mode := range writerbench.Modes {
			var base float64
			for _, ob := range writerbench.Outboxes {
				c := writerbench.Case{Mode: mode, Outbox: ob}
				b.Run(fmt.Sprintf("writers=%d/%s/%s", writers, mode, ob), func(b *testing.B) {
					b.ResetTimer()
					s, err := orders.Drive(ctx, c, writerbench.Load{Writers: writers, Transactions: int64(b.N)})
					b.StopTimer()
					if err != nil {
						b.Fatal(err)
					}
					perOp := float64(b.Elapsed()) / float64(b.N)
					if ob == writerbench.WithoutOutbox {
						base = perOp
					} else if base > 0 {
						b.ReportMetric(perOp/base, "ratio")
					}
					cpu := s.CPUPerTx()
					b.ReportMetric(float64(cpu.Client.Microseconds()), "client-cpu-µs/op")
					if cpu.Server >= 0 {
						b.ReportMetric(float64(cpu.Server.Microseconds()), "server-cpu-µs/op")
					}
					b.ReportMetric(s.RoundTripsPerTx(), "roundtrips/op")
				})
			}
		}
	}
}
