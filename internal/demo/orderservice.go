// Package demo holds the parts of `outbox demo` that stand in for the user's
// world around the pipeline: an order service that writes through the outbox,
// mock payment and shipping APIs that fail on purpose and count every effect,
// a load generator that resubmits orders, and the audit that checks the run.
// Run wires them to the real stages, run as child processes of the outbox
// binary; cmd/outbox only maps its flags to a Config and prints the Report.
package demo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/outbox"
)

// OrdersTable is the order service's own business table. It is the demo's
// "your code": created by the demo, not by the outbox migrations.
const OrdersTable = `CREATE TABLE IF NOT EXISTS demo_orders (
	order_id     text PRIMARY KEY,
	customer_id  text NOT NULL,
	amount_cents bigint NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now()
)`

var errReplayed = errors.New("demo: replayed")

// OrderRequest is the body of POST /orders.
type OrderRequest struct {
	CustomerID  string          `json:"customer_id"`
	AmountCents int64           `json:"amount_cents"`
	Currency    string          `json:"currency"`
	Items       json.RawMessage `json:"items"`
	Address     json.RawMessage `json:"shipping_address"`
	// Attachment is an optional document (base64), the bulk of a large order.
	Attachment string `json:"attachment,omitempty"`
}

// OrderService answers POST /orders: the order row, its order.created event
// and the Idempotency-Key claim commit in one transaction (one pipelined
// batch of two statements), and it answers 201 at once whatever Kafka is
// doing.
type OrderService struct {
	Pool   *pgxpool.Pool
	Writer *outbox.Writer
	Logger *slog.Logger

	created, replayed, conflicts atomic.Int64
}

// Counts returns orders created, replays answered and 409/422 answers.
func (s *OrderService) Counts() (created, replayed, conflicts int64) {
	return s.created.Load(), s.replayed.Load(), s.conflicts.Load()
}

// ServeHTTP implements POST /orders.
func (s *OrderService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/orders" {
		http.NotFound(w, r)
		return
	}
	key := outbox.Key{Scope: r.Header.Get("X-Customer-ID"), Key: r.Header.Get("Idempotency-Key")}
	if key.Key == "" {
		http.Error(w, "Idempotency-Key header is required", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	var req OrderRequest
	if err := json.Unmarshal(body, &req); err != nil || req.CustomerID == "" || req.AmountCents <= 0 {
		http.Error(w, "body must be JSON with customer_id and a positive amount_cents", http.StatusBadRequest)
		return
	}
	// The request's W3C trace context becomes the events' traceparent, and
	// travels through the relay, the transform and the sink to the API call.
	ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := otel.Tracer("github.com/outboxrelay/outbox/demo").Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	if c := r.Header.Get("X-Correlation-ID"); c != "" {
		ctx = outbox.WithCorrelationID(ctx, c)
	}
	orderID := uuid.Must(uuid.NewV7()).String()
	payload, _ := json.Marshal(map[string]any{
		"order_id": orderID, "customer_id": req.CustomerID, "amount_cents": req.AmountCents,
		"currency": req.Currency, "items": req.Items, "shipping_address": req.Address, "attachment": req.Attachment,
	})
	respBody, _ := json.Marshal(map[string]string{"order_id": orderID})

	var claim outbox.Claim
	fp := outbox.Fingerprint([]byte(r.Method), []byte(r.URL.Path), body)
	resp := &outbox.Response{StatusCode: http.StatusCreated, Body: respBody}
	ev := outbox.Event{AggregateType: "order", AggregateID: orderID, EventType: "order.created", Payload: payload}
	const insertOrder = `INSERT INTO demo_orders (order_id, customer_id, amount_cents) VALUES ($1, $2, $3)`
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if len(payload) > outbox.DefaultMaxPayloadBytes {
			// Over the event limit: the payload goes to the claim-check
			// store in this transaction, which the pipelined Batch cannot do.
			if claim, _, err = s.Writer.ClaimAndWrite(ctx, tx, key, fp, resp, ev); err != nil {
				return err
			}
			if claim.Replay != nil {
				return errReplayed
			}
			_, err := tx.Exec(ctx, insertOrder, orderID, req.CustomerID, req.AmountCents)
			return err
		}
		// The response is known before the work, so one statement claims
		// the key, inserts the event and stores the key completed; the order
		// row rides in the same round trip.
		b := s.Writer.NewBatch()
		if _, err := b.ClaimAndWrite(ctx, key, fp, resp, ev); err != nil {
			return err
		}
		b.Queue(insertOrder, orderID, req.CustomerID, req.AmountCents)
		claim, err = b.Run(ctx, tx)
		if err == nil && claim.Replay != nil {
			// Run rolled tx back; returning an error keeps BeginFunc from committing it.
			return errReplayed
		}
		return err
	})
	if errors.Is(err, errReplayed) {
		err = nil
	}
	switch {
	case errors.Is(err, outbox.ErrKeyInFlight):
		s.conflicts.Add(1)
		http.Error(w, "a request with this Idempotency-Key is in progress; retry later", http.StatusConflict)
	case errors.Is(err, outbox.ErrKeyMismatch):
		s.conflicts.Add(1)
		http.Error(w, "Idempotency-Key reused with a different request", http.StatusUnprocessableEntity)
	case errors.Is(err, outbox.ErrInvalidKey):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case err != nil:
		s.Logger.ErrorContext(ctx, "demo: create order", slog.Any("err", err))
		http.Error(w, "internal error", http.StatusInternalServerError)
	case claim.Replay != nil:
		s.replayed.Add(1)
		w.Header().Set("Idempotent-Replayed", "true")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(claim.Replay.StatusCode)
		_, _ = w.Write(claim.Replay.Body)
	default:
		s.created.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(respBody)
	}
}

// String summarises the counts.
func (s *OrderService) String() string {
	c, r, x := s.Counts()
	return fmt.Sprintf("created=%d replayed=%d conflicts=%d", c, r, x)
}
