package debezium

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/pgconnect"
)

// Connector says which outbox table the Debezium connector streams.
type Connector struct {
	// Name names the connector; its task's transactional id is derived from
	// it (KIP-618: GROUP-NAME-0). Required.
	Name string
	// DatabaseURL is a postgres:// URL of the database holding Table, over
	// TCP (Debezium connects with JDBC); its user needs the REPLICATION
	// attribute. sslmode, when given, is passed on. Required.
	DatabaseURL string
	// Slot is the logical replication slot (pgoutput). Debezium creates it
	// when it does not exist and never drops it: the caller does. Required.
	Slot string
	// Publication is the publication to stream. When it exists (the
	// migrations make outbox_events) Debezium uses it as it is
	// (publication.autocreate.mode=disabled); otherwise Debezium creates it
	// for Table alone, through the partition root (filtered). Defaults to
	// outbox_events.
	Publication string
	// Table is the outbox table, schema-qualified. Defaults to outbox.events.
	Table string
	// Tuned raises Debezium's batch and queue sizes and the producer's batch
	// for throughput (TunedSettings); otherwise Debezium's and Kafka's
	// defaults stand. Defaults to off.
	Tuned bool
}

// TunedSettings returns the connector settings Connector.Tuned adds.
// Debezium's defaults are max.batch.size 2048, max.queue.size 8192 and
// poll.interval.ms 500 (the wait when its queue is empty); the producer's are
// batch.size 16384 and linger.ms 5. With transaction.boundary=poll each poll
// is one Kafka transaction, so a larger batch means fewer, larger
// transactions, as the relay makes them. The producer overrides need
// connector.client.config.override.policy=All, which scripts/connect.sh sets.
func TunedSettings() map[string]string {
	return map[string]string{
		"max.batch.size":               "10000",
		"max.queue.size":               "40000",
		"poll.interval.ms":             "50",
		"producer.override.batch.size": "524288",
		"producer.override.linger.ms":  "10",
	}
}

// OutboxConfig is the connector configuration AddOutboxConnector PUTs, with
// publication.autocreate.mode set as if the publication existed when
// publicationExists is true. The password is in it: do not log it.
//
// Records land as the relay writes them: on the topic named by the row's
// topic column (route.by.field=topic, so that column must not be empty),
// keyed by aggregate_id as a string, the payload bytes as the value, and
// headers id (the event id, Debezium's name for it), event_type and
// aggregate_type.
//
// snapshot.mode=no_data: rows already in the table are not read. The
// connector streams from its slot: a slot made before the connector (after
// the publication) delivers everything committed since, a backlog included;
// a slot Debezium creates delivers what is committed after the task started.
func OutboxConfig(c Connector, publicationExists bool) (map[string]string, error) {
	if c.Name == "" || c.Slot == "" || c.DatabaseURL == "" {
		return nil, errors.New("debezium: Connector.Name, Slot and DatabaseURL are required")
	}
	if c.Table == "" {
		c.Table = "outbox.events"
	}
	c.Publication = publicationName(c)
	db, err := parseDatabaseURL(c.DatabaseURL)
	if err != nil {
		return nil, err
	}
	cfg := map[string]string{
		"connector.class":   "io.debezium.connector.postgresql.PostgresConnector",
		"tasks.max":         "1",
		"plugin.name":       "pgoutput",
		"database.hostname": db.host,
		"database.port":     db.port,
		"database.user":     db.user,
		"database.password": db.password,
		"database.dbname":   db.dbname,
		"slot.name":         c.Slot,
		"publication.name":  c.Publication,
		// The outbox table is partitioned by day: its changes are published
		// as the root's, which is the table included below.
		"publish.via.partition.root": "true",
		"table.include.list":         c.Table,
		// Debezium's own topics (heartbeats, schema changes) would be named
		// after it; the outbox router renames every data record.
		"topic.prefix":  c.Name,
		"snapshot.mode": "no_data",

		// KIP-618: the records of one poll, and the offset (LSN) they end at,
		// in one Kafka transaction.
		"exactly.once.support": "required",
		"transaction.boundary": "poll",

		// Raw key and value bytes, as the relay writes them (the worker's
		// default is JSON).
		"key.converter":   "org.apache.kafka.connect.storage.StringConverter",
		"value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",

		"transforms":                                          "outbox",
		"transforms.outbox.type":                              "io.debezium.transforms.outbox.EventRouter",
		"transforms.outbox.table.field.event.id":              "event_id",
		"transforms.outbox.table.field.event.key":             "aggregate_id",
		"transforms.outbox.table.field.event.payload":         "payload",
		"transforms.outbox.table.fields.additional.placement": "event_type:header:event_type,aggregate_type:header:aggregate_type",
		"transforms.outbox.route.by.field":                    "topic",
		"transforms.outbox.route.topic.replacement":           "${routedByValue}",
	}
	if db.sslmode != "" {
		cfg["database.sslmode"] = db.sslmode
	}
	if publicationExists {
		cfg["publication.autocreate.mode"] = "disabled"
	} else {
		cfg["publication.autocreate.mode"] = "filtered"
	}
	if c.Tuned {
		for k, v := range TunedSettings() {
			cfg[k] = v
		}
	}
	return cfg, nil
}

type database struct{ host, port, user, password, dbname, sslmode string }

func parseDatabaseURL(s string) (database, error) {
	var db database
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return db, fmt.Errorf("debezium: DatabaseURL %s is not a postgres:// URL", pgconnect.Redact(s))
	}
	db.host = u.Hostname()
	if db.host == "" || strings.HasPrefix(db.host, "/") {
		return db, fmt.Errorf("debezium: DatabaseURL %s names no TCP host: Debezium connects with JDBC over TCP", pgconnect.Redact(s))
	}
	db.port = u.Port()
	if db.port == "" {
		db.port = "5432"
	}
	if _, err := strconv.Atoi(db.port); err != nil {
		return db, fmt.Errorf("debezium: DatabaseURL %s: port %q", pgconnect.Redact(s), db.port)
	}
	db.user = u.User.Username()
	db.password, _ = u.User.Password()
	if db.user == "" {
		return db, fmt.Errorf("debezium: DatabaseURL %s names no user", pgconnect.Redact(s))
	}
	db.dbname = strings.TrimPrefix(u.Path, "/")
	if db.dbname == "" {
		return db, fmt.Errorf("debezium: DatabaseURL %s names no database", pgconnect.Redact(s))
	}
	db.sslmode = u.Query().Get("sslmode")
	return db, nil
}

// Status is a connector's state as the worker reports it
// (GET /connectors/NAME/status).
type Status struct {
	Name      string     `json:"name"`
	Connector TaskStatus `json:"connector"`
	Tasks     []Task     `json:"tasks"`
}

// Task is one of a connector's tasks; the outbox connector has one, task 0.
type Task struct {
	ID int `json:"id"`
	TaskStatus
}

// TaskStatus is the state of a connector or of one task: UNASSIGNED,
// RUNNING, PAUSED, STOPPED, FAILED or RESTARTING, with the stack trace of a
// failure.
type TaskStatus struct {
	State    string `json:"state"`
	WorkerID string `json:"worker_id"`
	Trace    string `json:"trace,omitempty"`
}

// ErrConnectorNotFound is returned by ConnectorStatus and DeleteConnector
// when the worker has no connector of that name.
var ErrConnectorNotFound = errors.New("debezium: no such connector")

// AddOutboxConnector creates (or reconfigures) the Debezium outbox connector
// c (OutboxConfig) and returns once the connector and its task are RUNNING,
// or the task's stack trace when one FAILED. RUNNING means the task started:
// its slot exists, and rows committed from then on will be streamed. The
// target topics must exist: the broker does not create them.
func (w *Worker) AddOutboxConnector(ctx context.Context, c Connector) error {
	pubExists, slotExists, err := lookup(ctx, c)
	if err != nil {
		return err
	}
	if !pubExists && slotExists {
		// pgoutput reads the publication as of each change it decodes: a
		// publication made after the slot is not there for the changes the
		// slot already holds, and Debezium streams nothing.
		return fmt.Errorf("debezium: slot %s exists but publication %s does not: create the publication before the slot (the migrations make outbox_events), or let Debezium create both", c.Slot, publicationName(c))
	}
	cfg, err := OutboxConfig(c, pubExists)
	if err != nil {
		return err
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	// A worker that is rebalancing answers 409; one still joining, 503.
	for {
		code, resp, err := w.do(ctx, http.MethodPut, "/connectors/"+url.PathEscape(c.Name)+"/config", body)
		if err != nil {
			return err
		}
		if code == http.StatusOK || code == http.StatusCreated {
			break
		}
		if code != http.StatusConflict && code != http.StatusServiceUnavailable {
			return fmt.Errorf("debezium: create connector %s: HTTP %d: %s", c.Name, code, resp)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("debezium: create connector %s: HTTP %d: %s: %w", c.Name, code, resp, err)
		}
	}
	return w.WaitRunning(ctx, c.Name)
}

func publicationName(c Connector) string {
	if c.Publication == "" {
		return "outbox_events"
	}
	return c.Publication
}

// lookup reports whether c's publication and slot exist.
func lookup(ctx context.Context, c Connector) (pub, slot bool, err error) {
	conn, err := pgx.Connect(ctx, c.DatabaseURL)
	if err != nil {
		return false, false, fmt.Errorf("debezium: connect to %s: %w", pgconnect.Redact(c.DatabaseURL), err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
		EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $2 AND database = current_database())`,
		publicationName(c), c.Slot).Scan(&pub, &slot)
	if err != nil {
		return false, false, fmt.Errorf("debezium: look up publication %s and slot %s: %w", publicationName(c), c.Slot, err)
	}
	return pub, slot, nil
}

// WaitRunning waits until the connector name and all its tasks (at least
// one) are RUNNING. It returns the failed one's trace when one is FAILED.
func (w *Worker) WaitRunning(ctx context.Context, name string) error {
	var last string
	for {
		st, err := w.ConnectorStatus(ctx, name)
		switch {
		case errors.Is(err, ErrConnectorNotFound):
			// Just created: the status topic has not caught up yet.
			last = "not yet known to the worker"
		case err != nil:
			return err
		case st.Connector.State == "FAILED":
			return fmt.Errorf("debezium: connector %s FAILED: %s", name, st.Connector.Trace)
		default:
			running := st.Connector.State == "RUNNING" && len(st.Tasks) > 0
			for _, t := range st.Tasks {
				if t.State == "FAILED" {
					return fmt.Errorf("debezium: connector %s task %d FAILED: %s", name, t.ID, t.Trace)
				}
				running = running && t.State == "RUNNING"
			}
			if running {
				return nil
			}
			last = fmt.Sprintf("connector %s, %d tasks", st.Connector.State, len(st.Tasks))
			for _, t := range st.Tasks {
				last += fmt.Sprintf(", task %d %s", t.ID, t.State)
			}
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("debezium: connector %s not running (%s): %w", name, last, err)
		}
	}
}

// ConnectorStatus reports the state of connector name and of its tasks.
func (w *Worker) ConnectorStatus(ctx context.Context, name string) (Status, error) {
	var st Status
	code, body, err := w.do(ctx, http.MethodGet, "/connectors/"+url.PathEscape(name)+"/status", nil)
	if err != nil {
		return st, err
	}
	switch code {
	case http.StatusOK:
	case http.StatusNotFound:
		return st, fmt.Errorf("%w: %s", ErrConnectorNotFound, name)
	default:
		return st, fmt.Errorf("debezium: status of connector %s: HTTP %d: %s", name, code, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("debezium: status of connector %s: %w", name, err)
	}
	return st, nil
}

// DeleteConnector deletes connector name and waits until the worker no
// longer knows it, so its task has stopped and released the slot. Its
// offsets stay in the worker's offset topic and its slot in Postgres.
func (w *Worker) DeleteConnector(ctx context.Context, name string) error {
	for {
		code, body, err := w.do(ctx, http.MethodDelete, "/connectors/"+url.PathEscape(name), nil)
		if err != nil {
			return err
		}
		if code == http.StatusNotFound {
			return fmt.Errorf("%w: %s", ErrConnectorNotFound, name)
		}
		if code == http.StatusNoContent || code == http.StatusOK {
			break
		}
		if code != http.StatusConflict && code != http.StatusServiceUnavailable {
			return fmt.Errorf("debezium: delete connector %s: HTTP %d: %s", name, code, body)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("debezium: delete connector %s: HTTP %d: %s: %w", name, code, body, err)
		}
	}
	for {
		_, err := w.ConnectorStatus(ctx, name)
		if errors.Is(err, ErrConnectorNotFound) {
			return nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("debezium: connector %s still present after delete: %w", name, err)
		}
	}
}

// do sends one REST request and returns the status code and the body.
func (w *Worker) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.url+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := w.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("debezium: %s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("debezium: %s %s: %w", method, path, err)
	}
	return resp.StatusCode, out, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
