package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/outbox"
)

// An order handler: the order row, its order.created event and the
// Idempotency-Key claim commit in one transaction, and the handler answers 201
// at once (Kafka's state never matters here; the relay publishes the event
// later). A retry with the same key replays the stored answer.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS shop_orders (id text PRIMARY KEY, sku text NOT NULL)`); err != nil {
		panic(err)
	}
	writer, err := outbox.New(outbox.Config{}) // schema "outbox", 1 MiB payloads, keys kept 24h
	if err != nil {
		panic(err)
	}

	createOrder := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct{ ID, SKU string }
		if json.Unmarshal(body, &req) != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		key := outbox.Key{Scope: r.Header.Get("X-Customer"), Key: r.Header.Get("Idempotency-Key")}
		ctx := outbox.WithCorrelationID(r.Context(), r.Header.Get("X-Correlation-ID"))

		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			claim, err := writer.ClaimKey(ctx, tx, key, outbox.Fingerprint([]byte(r.Method), []byte(r.URL.Path), body))
			if err != nil {
				return err
			}
			if claim.Replay != nil {
				w.Header().Set("Idempotent-Replayed", "true")
				w.WriteHeader(claim.Replay.StatusCode)
				_, _ = w.Write(claim.Replay.Body)
				return nil
			}
			if _, err := tx.Exec(ctx, `INSERT INTO shop_orders (id, sku) VALUES ($1, $2)`, req.ID, req.SKU); err != nil {
				return err
			}
			payload, _ := json.Marshal(map[string]string{"order_id": req.ID, "sku": req.SKU})
			if _, err := writer.Write(ctx, tx, outbox.Event{
				AggregateType: "order",
				AggregateID:   req.ID,
				EventType:     "order.created",
				Payload:       payload,
			}); err != nil {
				return err
			}
			resp := outbox.Response{StatusCode: http.StatusCreated, Body: []byte(`{"id":"` + req.ID + `"}`)}
			if err := writer.CompleteKey(ctx, tx, key, resp); err != nil {
				return err
			}
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(resp.Body)
			return nil
		})
		switch {
		case errors.Is(err, outbox.ErrKeyInFlight):
			http.Error(w, "a request with this Idempotency-Key is in progress", http.StatusConflict)
		case errors.Is(err, outbox.ErrKeyMismatch):
			http.Error(w, "Idempotency-Key reused with another request", http.StatusUnprocessableEntity)
		case errors.Is(err, outbox.ErrInvalidKey):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}

	post := func(key, body string) {
		req := httptest.NewRequest(http.MethodPost, "/orders", bytes.NewBufferString(body))
		req.Header.Set("Idempotency-Key", key)
		rec := httptest.NewRecorder()
		createOrder(rec, req)
		fmt.Println(rec.Code, rec.Header().Get("Idempotent-Replayed"), rec.Body.String())
	}
	post("key-1", `{"ID":"A-1","SKU":"book"}`)
	post("key-1", `{"ID":"A-1","SKU":"book"}`) // a client retry: replayed
	post("key-1", `{"ID":"A-2","SKU":"pen"}`)  // same key, other request

	var events int
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM outbox.events`).Scan(&events)
	fmt.Println("events:", events)
	// Output:
	// 201  {"id":"A-1"}
	// 201 true {"id":"A-1"}
	// 422  Idempotency-Key reused with another request
	//
	// events: 1
}
