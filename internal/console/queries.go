package console

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/sql"
)

// The console's Postgres reads are sqlc queries (queries/console.sql, the
// Console* methods of package sql), run on the Server's sql.InSchema pool;
// every one of them only reads. This file turns their rows into the views'
// types, which carry the JSON names the pages answer with.

// queries are the generated queries; they hold no state.
var queries = sql.New()

// Slot is one replication slot on the pipeline page.
type Slot struct {
	Name            string `json:"slot_name"`
	Plugin          string `json:"plugin"`
	Active          bool   `json:"active"`
	ActivePID       int    `json:"active_pid"`
	Application     string `json:"application_name"`
	ClientAddr      string `json:"client_addr"`
	WALStatus       string `json:"wal_status"`
	RetainedBytes   int64  `json:"retained_bytes"`
	ConfirmedLSN    string `json:"confirmed_flush_lsn"`
	ConfirmedLag    int64  `json:"confirmed_lag_bytes"`
	CurrentLSN      string `json:"current_lsn"`
	RetainedHuman   string `json:"-"`
	ConfirmedHuman  string `json:"-"`
	StatusForHumans string `json:"-"`
}

// readSlots lists the database's replication slots and who holds each.
func readSlots(ctx context.Context, db sql.DBTX) ([]Slot, error) {
	rows, err := queries.ConsoleSlots(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("console: read slots: %w", err)
	}
	out := make([]Slot, 0, len(rows))
	for _, r := range rows {
		s := Slot{Name: r.SlotName, Plugin: r.Plugin, Active: r.Active, ActivePID: int(r.ActivePid), Application: r.ApplicationName,
			ClientAddr: r.ClientAddr, WALStatus: r.WalStatus, RetainedBytes: r.RetainedBytes, ConfirmedLSN: r.ConfirmedFlushLsn,
			ConfirmedLag: r.ConfirmedLagBytes, CurrentLSN: r.CurrentLsn}
		s.RetainedHuman, s.ConfirmedHuman = bytesHuman(s.RetainedBytes), bytesHuman(s.ConfirmedLag)
		switch {
		case s.WALStatus == "lost":
			s.StatusForHumans = "ERR"
		case !s.Active:
			s.StatusForHumans = "STOP"
		default:
			s.StatusForHumans = "OK"
		}
		out = append(out, s)
	}
	return out, nil
}

// OutboxEvent is an outbox row in a journey.
type OutboxEvent struct {
	EventID       uuid.UUID         `json:"event_id"`
	AggregateType string            `json:"aggregate_type"`
	AggregateID   string            `json:"aggregate_id"`
	EventType     string            `json:"event_type"`
	Topic         string            `json:"topic"`
	FanoutTopics  []string          `json:"fanout_topics"`
	Kind          string            `json:"kind"`
	ContentType   string            `json:"content_type"`
	PayloadBytes  int               `json:"payload_bytes"`
	Headers       map[string]string `json:"headers"`
	OccurredAt    time.Time         `json:"occurred_at"`
	CreatedAt     time.Time         `json:"created_at"`
	XID           int64             `json:"xid"`
}

// readJourneyEvents finds the outbox rows of q: an event id, an aggregate
// id, or a correlation or causation id.
func readJourneyEvents(ctx context.Context, db sql.DBTX, q string) ([]OutboxEvent, error) {
	arg := sql.ConsoleJourneyEventsParams{Q: q}
	if u, err := uuid.Parse(q); err == nil {
		arg.EventID = pgtype.UUID{Bytes: u, Valid: true}
	}
	rows, err := queries.ConsoleJourneyEvents(ctx, db, arg)
	if err != nil {
		return nil, fmt.Errorf("console: read outbox events: %w", err)
	}
	out := make([]OutboxEvent, 0, len(rows))
	for _, r := range rows {
		e := OutboxEvent{EventID: r.EventID, AggregateType: r.AggregateType, AggregateID: r.AggregateID, EventType: r.EventType,
			Topic: r.Topic, FanoutTopics: r.FanoutTopics, Kind: r.Kind, ContentType: r.ContentType, PayloadBytes: int(r.PayloadBytes),
			OccurredAt: r.OccurredAt, CreatedAt: r.CreatedAt, XID: r.Xid}
		if err := json.Unmarshal(r.Headers, &e.Headers); err != nil {
			return nil, fmt.Errorf("console: read outbox events: headers of %s: %w", r.EventID, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// LedgerRow is where an event stands with one endpoint.
type LedgerRow struct {
	Endpoint       string     `json:"endpoint"`
	EventID        uuid.UUID  `json:"event_id"`
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	LastStatusCode *int       `json:"last_status_code,omitempty"`
	LastError      *string    `json:"last_error,omitempty"`
	ProviderRef    *string    `json:"provider_ref,omitempty"`
	Topic          string     `json:"topic"`
	Partition      int32      `json:"partition"`
	Offset         int64      `json:"offset"`
	NextAttemptAt  *time.Time `json:"next_attempt_at,omitempty"`
	Replays        int        `json:"replays"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
}

// readLedgerRows is every endpoint's ledger row of the events ids.
func readLedgerRows(ctx context.Context, db sql.DBTX, ids []uuid.UUID) ([]LedgerRow, error) {
	rows, err := queries.ConsoleLedgerRows(ctx, db, ids)
	if err != nil {
		return nil, fmt.Errorf("console: read ledger rows: %w", err)
	}
	out := make([]LedgerRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, LedgerRow{Endpoint: r.Endpoint, EventID: r.EventID, Status: r.Status, Attempts: int(r.Attempts),
			LastStatusCode: intPtr(r.LastStatusCode), LastError: r.LastError, ProviderRef: r.ProviderRef, Topic: r.Topic,
			Partition: r.KafkaPartition, Offset: r.KafkaOffset, NextAttemptAt: r.NextAttemptAt, Replays: int(r.Replays),
			CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt})
	}
	return out, nil
}

// Attempt is one call the sink made, with what the API answered.
type Attempt struct {
	Endpoint   string    `json:"endpoint"`
	EventID    uuid.UUID `json:"event_id"`
	N          int       `json:"n"`
	Outcome    string    `json:"outcome"`
	StatusCode *int      `json:"status_code,omitempty"`
	BodyDigest *string   `json:"body_digest,omitempty"`
	BodyHead   string    `json:"body_head"`
	Error      *string   `json:"error,omitempty"`
	LatencyMS  *int64    `json:"latency_ms,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
}

// readAttempts is every recorded call (and status lookup) of the events ids.
func readAttempts(ctx context.Context, db sql.DBTX, ids []uuid.UUID) ([]Attempt, error) {
	rows, err := queries.ConsoleAttempts(ctx, db, ids)
	if err != nil {
		return nil, fmt.Errorf("console: read attempts: %w", err)
	}
	out := make([]Attempt, 0, len(rows))
	for _, r := range rows {
		out = append(out, Attempt{Endpoint: r.Endpoint, EventID: r.EventID, N: int(r.N), Outcome: r.Outcome,
			StatusCode: intPtr(r.StatusCode), BodyDigest: r.BodyDigest, BodyHead: printable(r.BodyHead), Error: r.Error,
			LatencyMS: r.LatencyMs, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt})
	}
	return out, nil
}

// intPtr widens a nullable int4 column to the views' *int.
func intPtr(p *int32) *int {
	if p == nil {
		return nil
	}
	v := int(*p)
	return &v
}
