package writerbench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/outbox"
)

// Mode is how a transaction's statements travel to Postgres.
type Mode string

const (
	// Statements sends each statement on its own and waits for its answer:
	// one round trip per statement, as most order services do.
	Statements Mode = "statements"
	// Batch pipelines every statement between BEGIN and COMMIT in one pgx
	// batch (an outbox.Batch with the outbox): BEGIN, one batch, COMMIT.
	Batch Mode = "batch"
)

// Modes are the modes in the order a run measures them.
var Modes = []Mode{Statements, Batch}

// Outbox is what an order transaction does besides its business rows.
type Outbox string

const (
	// WithoutOutbox is the order row and its line items only: the baseline.
	WithoutOutbox Outbox = "without-outbox"
	// WithOutbox adds the Idempotency-Key claim, one order.created event and
	// the stored response, written by one statement (Writer.ClaimAndWrite, or
	// Batch.ClaimAndWrite in batch mode) before the business rows.
	WithOutbox Outbox = "with-outbox"
	// WithOutboxStepwise adds the same, one call each: ClaimKey before the
	// business rows, then Write and CompleteKey after them (three statements).
	WithOutboxStepwise Outbox = "with-outbox-stepwise"
)

// Outboxes are the cases in the order a run measures them; the first is the
// baseline the others' ratios are taken against.
var Outboxes = []Outbox{WithoutOutbox, WithOutbox, WithOutboxStepwise}

// Case is one kind of transaction.
type Case struct {
	Mode   Mode
	Outbox Outbox
}

func (c Case) String() string { return string(c.Mode) + "/" + string(c.Outbox) }

// Tables are the order service's own tables: an order, its line items (with
// the foreign key an order schema has) and an index to list a customer's
// orders. The outbox's tables come from the migrations.
const Tables = `
CREATE TABLE IF NOT EXISTS bench_orders (
    order_id     text PRIMARY KEY,
    customer_id  text NOT NULL,
    amount_cents bigint NOT NULL,
    currency     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bench_orders_customer ON bench_orders (customer_id);
CREATE TABLE IF NOT EXISTS bench_order_lines (
    order_id    text NOT NULL REFERENCES bench_orders,
    line        integer NOT NULL,
    sku         text NOT NULL,
    quantity    integer NOT NULL,
    price_cents bigint NOT NULL,
    PRIMARY KEY (order_id, line)
)`

const (
	insertOrder = `INSERT INTO bench_orders (order_id, customer_id, amount_cents, currency) VALUES ($1, $2, $3, 'EUR')`
	insertLines = `INSERT INTO bench_order_lines (order_id, line, sku, quantity, price_cents)
VALUES ($1, 1, $2, $3, $4), ($1, 2, $5, $6, $7), ($1, 3, $8, $9, $10)`
)

// Orders places orders on a pool: the workload of both `outbox bench writer`
// and outbox's BenchmarkRealisticOrderTx. It is safe for concurrent use.
type Orders struct {
	pool   *pgxpool.Pool
	writer *outbox.Writer
	trips  *roundTrips
	cpu    cpuMeter
	run    string
	seq    atomic.Int64
}

// Open connects to the migrated database at url with room for maxConns
// concurrent writers, and creates Tables.
func Open(ctx context.Context, url string, maxConns int) (*Orders, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("writerbench: %w", err)
	}
	trips := &roundTrips{}
	pcfg.ConnConfig.Tracer = trips
	pcfg.MaxConns = int32(maxConns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("writerbench: %w", err)
	}
	if _, err := pool.Exec(ctx, Tables); err != nil {
		pool.Close()
		return nil, fmt.Errorf("writerbench: create the order tables: %w", err)
	}
	w, err := outbox.New(outbox.Config{})
	if err != nil {
		pool.Close()
		return nil, err
	}
	o := &Orders{pool: pool, writer: w, trips: trips, run: fmt.Sprint(time.Now().UnixNano())}
	if err := pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
		o.cpu = newCPUMeter(ctx, c.Conn())
		return nil
	}); err != nil {
		pool.Close()
		return nil, fmt.Errorf("writerbench: %w", err)
	}
	return o, nil
}

// Close closes the pool.
func (o *Orders) Close() { o.pool.Close() }

// Pool is the pool the orders are placed on.
func (o *Orders) Pool() *pgxpool.Pool { return o.pool }

// order is one order request: its ids, its body and what it writes.
type order struct {
	id, customer string
	amount       int64
	lines        [3]struct {
		sku      string
		quantity int
		price    int64
	}
	key         outbox.Key
	fingerprint string
	event       outbox.Event
	resp        outbox.Response
}

func (o *Orders) next(withOutbox bool) *order {
	n := o.seq.Add(1)
	r := &order{id: fmt.Sprintf("%s-%d", o.run, n), customer: fmt.Sprintf("customer-%d", n%1000)}
	for i := range r.lines {
		r.lines[i].sku = fmt.Sprintf("sku-%d", (n+int64(i))%5000)
		r.lines[i].quantity = 1 + i
		r.lines[i].price = 499 + int64(i)*250
		r.amount += int64(r.lines[i].quantity) * r.lines[i].price
	}
	if !withOutbox {
		return r
	}
	body := fmt.Sprintf(`{"customer_id":%q,"currency":"EUR","items":[{"sku":%q,"quantity":%d},{"sku":%q,"quantity":%d},{"sku":%q,"quantity":%d}]}`,
		r.customer, r.lines[0].sku, r.lines[0].quantity, r.lines[1].sku, r.lines[1].quantity, r.lines[2].sku, r.lines[2].quantity)
	r.key = outbox.Key{Scope: r.customer, Key: "checkout-" + r.id}
	r.fingerprint = outbox.Fingerprint([]byte("POST"), []byte("/orders"), []byte(body))
	// A ~460-byte order.created: the facts the event owns plus stable ids.
	payload := fmt.Sprintf(`{"order_id":%q,"customer_id":%q,"amount_cents":%d,"currency":"EUR","items":[`+
		`{"line":1,"sku":%q,"quantity":%d,"price_cents":%d},{"line":2,"sku":%q,"quantity":%d,"price_cents":%d},`+
		`{"line":3,"sku":%q,"quantity":%d,"price_cents":%d}],"shipping_address":{"name":"A. Customer","street":"1 Long Street",`+
		`"city":"Springfield","postcode":"12345","country":"DE"},"placed_at":%q}`,
		r.id, r.customer, r.amount,
		r.lines[0].sku, r.lines[0].quantity, r.lines[0].price, r.lines[1].sku, r.lines[1].quantity, r.lines[1].price,
		r.lines[2].sku, r.lines[2].quantity, r.lines[2].price, time.Now().UTC().Format(time.RFC3339Nano))
	r.event = outbox.Event{AggregateType: "order", AggregateID: r.id, EventType: "order.created", Payload: []byte(payload)}
	r.resp = outbox.Response{StatusCode: 201, Body: []byte(`{"order_id":"` + r.id + `"}`)}
	return r
}

func (r *order) orderArgs() []any { return []any{r.id, r.customer, r.amount} }

func (r *order) lineArgs() []any {
	args := []any{r.id}
	for _, l := range r.lines {
		args = append(args, l.sku, l.quantity, l.price)
	}
	return args
}

// errNotClaimed is a claim the bench lost: every order has a new key, so it
// never should.
var errNotClaimed = errors.New("writerbench: a new key was not claimed")

// Tx places one order in its own transaction, as c says, and commits it.
func (o *Orders) Tx(ctx context.Context, c Case) error {
	r := o.next(c.Outbox != WithoutOutbox)
	tx, err := o.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	switch c.Mode {
	case Statements:
		err = o.statements(ctx, tx, c.Outbox, r)
	case Batch:
		err = o.batch(ctx, tx, c.Outbox, r)
	default:
		err = fmt.Errorf("writerbench: unknown mode %q", c.Mode)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", c, err)
	}
	return tx.Commit(ctx)
}

func (o *Orders) statements(ctx context.Context, tx pgx.Tx, ob Outbox, r *order) error {
	w := o.writer
	switch ob {
	case WithOutbox:
		claim, _, err := w.ClaimAndWrite(ctx, tx, r.key, r.fingerprint, &r.resp, r.event)
		if err != nil {
			return err
		}
		if claim.Replay != nil {
			return errNotClaimed
		}
	case WithOutboxStepwise:
		claim, err := w.ClaimKey(ctx, tx, r.key, r.fingerprint)
		if err != nil {
			return err
		}
		if claim.Replay != nil {
			return errNotClaimed
		}
	}
	if _, err := tx.Exec(ctx, insertOrder, r.orderArgs()...); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, insertLines, r.lineArgs()...); err != nil {
		return err
	}
	if ob == WithOutboxStepwise {
		if _, err := w.Write(ctx, tx, r.event); err != nil {
			return err
		}
		return w.CompleteKey(ctx, tx, r.key, r.resp)
	}
	return nil
}

func (o *Orders) batch(ctx context.Context, tx pgx.Tx, ob Outbox, r *order) error {
	if ob == WithoutOutbox {
		var b pgx.Batch
		b.Queue(insertOrder, r.orderArgs()...)
		b.Queue(insertLines, r.lineArgs()...)
		return tx.SendBatch(ctx, &b).Close()
	}
	b := o.writer.NewBatch()
	switch ob {
	case WithOutbox:
		if _, err := b.ClaimAndWrite(ctx, r.key, r.fingerprint, &r.resp, r.event); err != nil {
			return err
		}
	case WithOutboxStepwise:
		if err := b.ClaimKey(r.key, r.fingerprint); err != nil {
			return err
		}
	}
	b.Queue(insertOrder, r.orderArgs()...)
	b.Queue(insertLines, r.lineArgs()...)
	if ob == WithOutboxStepwise {
		if _, err := b.Write(ctx, r.event); err != nil {
			return err
		}
		if err := b.CompleteKey(r.resp); err != nil {
			return err
		}
	}
	claim, err := b.Run(ctx, tx)
	if err == nil && claim.Replay != nil {
		err = errNotClaimed
	}
	return err
}
