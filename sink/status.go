package sink

import (
	"context"
	"fmt"
	"time"

	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/sql"
)

// StatusCount is one line of `outbox sink status`: how many ledger rows of an
// endpoint are in a status.
type StatusCount struct {
	Endpoint string `json:"endpoint"`
	Status   string `json:"status"`
	Rows     int64  `json:"rows"`
}

// Status counts ledger rows per endpoint and status updated since the given
// time: the query on-call runs to alert on failed or unknown calls. The sink
// exports the same counts as the outbox_sink_ledger_rows gauge.
func Status(ctx context.Context, db sql.DBTX, schema string, since time.Time) ([]StatusCount, error) {
	if err := migrations.ValidateSchema(schema); err != nil {
		return nil, err
	}
	rows, err := sql.New().LedgerCountByStatus(ctx, sql.InSchema(db, schema), since)
	if err != nil {
		return nil, fmt.Errorf("sink: ledger status: %w", err)
	}
	out := make([]StatusCount, len(rows))
	for i, r := range rows {
		out[i] = StatusCount{Endpoint: r.Endpoint, Status: r.Status, Rows: r.Rows}
	}
	return out, nil
}
