// Package doctor checks that a Postgres database is ready for the outbox
// pipeline (server version, wal_level, slot and sender headroom, migrations,
// publication, the role's rights, slot lag) and says what to do about each
// failed check. Given the relay's Kafka checkpoint (Options.Checkpoint), it
// also says whether the relay's slot may have a gap (lost WAL, a dropped or
// recreated slot, a failover, a restore) and prints the command that repairs
// it. `outbox doctor` prints its report; the relay's own preflight covers the
// same ground at start.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/sql"
)

// Status of one check.
type Status string

// Check statuses.
const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
	// Info is a check that was not made, with why; it fails nothing.
	Info Status = "INFO"
)

// Check is one line of the report.
type Check struct {
	Name   string
	Status Status
	Detail string
	// Fix says what to do when Status is not OK.
	Fix string
}

// Report is every check, in order.
type Report struct{ Checks []Check }

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

// String renders the report, one check per line with its fix indented below.
func (r Report) String() string {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "[%-4s] %-22s %s\n", c.Status, c.Name, c.Detail)
		if c.Status != OK && c.Fix != "" {
			fmt.Fprintf(&b, "       fix: %s\n", c.Fix)
		}
	}
	return b.String()
}

// Options for Run.
type Options struct {
	// Schema holds the outbox tables. Defaults to "outbox".
	Schema string
	// Publication to check. Defaults to "<schema>_events".
	Publication string
	// MaxRetainedBytes warns about a slot retaining more WAL. Defaults to 1 GiB.
	MaxRetainedBytes int64
	// Slot is the relay's replication slot, the one the gap check compares
	// with the relay's checkpoint. Defaults to "<schema>_relay".
	Slot string
	// Checkpoint reads the relay's last checkpoint for slot from Kafka;
	// found is false when there is none. An error fails the gap check. nil
	// (no Kafka given) skips the gap check with an Info line. Defaults to nil.
	Checkpoint func(ctx context.Context, slot string) (ck SlotCheckpoint, found bool, err error)
	// CheckpointTopic is the topic Checkpoint reads, named in the printed
	// commands when it is not the default. Defaults to DefaultCheckpointTopic.
	CheckpointTopic string
}

// MinServerVersion is the oldest Postgres the relay supports (14).
const MinServerVersion = 140000

// ErrConnect is returned by Run when the database cannot be reached at all.
var ErrConnect = errors.New("doctor: cannot connect")

// Run connects to databaseURL and runs every check, calling opts.Checkpoint
// (when set) once for the relay's slot. It returns an error when it cannot
// connect or a catalog query fails; failed checks are in the report.
func Run(ctx context.Context, databaseURL string, opts Options) (Report, error) {
	if opts.Schema == "" {
		opts.Schema = migrations.DefaultSchema
	}
	if opts.Publication == "" {
		opts.Publication = migrations.PublicationName(opts.Schema)
	}
	if opts.MaxRetainedBytes == 0 {
		opts.MaxRetainedBytes = 1 << 30
	}
	if opts.Slot == "" {
		opts.Slot = opts.Schema + "_relay"
	}
	if opts.CheckpointTopic == "" {
		opts.CheckpointTopic = DefaultCheckpointTopic
	}
	if err := migrations.ValidateSchema(opts.Schema); err != nil {
		return Report{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, databaseURL)
	if err != nil {
		return Report{}, fmt.Errorf("%w: %v; check the URL's host, port, user, password and database (postgres://user:pass@host:5432/db)", ErrConnect, err)
	}
	defer conn.Close(context.Background())
	q := sql.New()
	var r Report
	add := func(c Check) { r.Checks = append(r.Checks, c) }

	srv, err := q.DoctorServer(ctx, conn)
	if err != nil {
		return Report{}, fmt.Errorf("doctor: read server settings: %w", err)
	}
	c := Check{Name: "server version", Status: OK, Detail: "PostgreSQL " + srv.Version}
	if srv.VersionNum < MinServerVersion {
		c.Status, c.Fix = Fail, "upgrade to PostgreSQL 14 or newer"
	}
	add(c)

	c = Check{Name: "wal_level", Status: OK, Detail: srv.WalLevel}
	if srv.WalLevel != "logical" {
		c.Status = Fail
		c.Fix = "ALTER SYSTEM SET wal_level = logical; then restart Postgres (on RDS/Cloud SQL set rds.logical_replication=1 / cloudsql.logical_decoding=on)"
	}
	add(c)

	c = Check{Name: "replication slots", Status: OK, Detail: fmt.Sprintf("%d of %d used", srv.SlotsUsed, srv.MaxReplicationSlots)}
	if srv.MaxReplicationSlots-srv.SlotsUsed < 2 {
		c.Status = Fail
		c.Fix = "raise max_replication_slots (the relay needs one free slot, two for a cutover), then restart Postgres"
	}
	add(c)

	c = Check{Name: "wal senders", Status: OK, Detail: fmt.Sprintf("%d of %d used", srv.SendersUsed, srv.MaxWalSenders)}
	if srv.MaxWalSenders-srv.SendersUsed < 2 {
		c.Status = Fail
		c.Fix = "raise max_wal_senders (one per relay, plus one for a standby's attempt), then restart Postgres"
	}
	add(c)

	c = Check{Name: "replication right", Status: OK, Detail: "role " + srv.RoleName + " may replicate"}
	if !srv.CanReplicate {
		c.Status, c.Detail = Fail, "role "+srv.RoleName+" lacks REPLICATION"
		c.Fix = fmt.Sprintf("ALTER ROLE %s REPLICATION; (and allow replication connections for it in pg_hba.conf)", pgx.Identifier{srv.RoleName}.Sanitize())
	}
	add(c)

	mig, migrated := checkMigrations(ctx, databaseURL, opts.Schema)
	add(mig)

	pub, err := q.DoctorPublication(ctx, conn, sql.DoctorPublicationParams{Schema: opts.Schema, Name: opts.Publication})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return Report{}, fmt.Errorf("doctor: read publication: %w", err)
	}
	add(checkPublication(opts, pub, err == nil, migrated))
	priv, err := q.DoctorSchemaPrivileges(ctx, conn, opts.Schema)
	c = Check{Name: "writer grants", Status: OK, Detail: srv.RoleName + " may insert into " + opts.Schema + ".events"}
	if err != nil || !priv.Usage || !priv.InsertEvents {
		c.Status, c.Detail = Warn, srv.RoleName+" cannot insert into "+opts.Schema+".events (fine for a relay-only role)"
		c.Fix = fmt.Sprintf("for writer roles: GRANT USAGE ON SCHEMA %s TO app; GRANT INSERT ON %s.events TO app; GRANT SELECT, INSERT, UPDATE ON %s.idempotency_keys TO app", opts.Schema, opts.Schema, opts.Schema)
	}
	add(c)

	slots, err := q.DoctorSlots(ctx, conn)
	if err != nil {
		return Report{}, fmt.Errorf("doctor: read slots: %w", err)
	}
	if len(slots) == 0 {
		add(Check{Name: "relay slot", Status: Warn, Detail: "no replication slot in this database yet",
			Fix: "start `outbox relay` (it creates its slot) before the writers go live: a slot sees only what commits after it exists"})
	}
	var relaySlot *sql.DoctorSlotsRow
	for i, s := range slots {
		if s.SlotName == opts.Slot {
			relaySlot = &slots[i]
		}
	}
	gap, err := readGap(ctx, q, conn, opts, relaySlot)
	if err != nil {
		return Report{}, err
	}
	for _, s := range slots {
		c = Check{Name: "slot " + s.SlotName, Status: OK, Detail: fmt.Sprintf("%s, active=%t, wal_status=%s, retains %s", s.Plugin, s.Active, s.WalStatus, bytesStr(s.RetainedBytes))}
		switch {
		case s.WalStatus == "lost":
			c.Status = Fail
			c.Fix = lostWALFix(opts, s.SlotName, gap.since())
		case s.RetainedBytes > opts.MaxRetainedBytes:
			c.Status = Warn
			c.Fix = "a slot retaining this much WAL has a stopped or lagging consumer: start the relay, or drop the slot if it is abandoned"
		case s.WalStatus == "unreserved":
			c.Status = Warn
			c.Fix = "the slot is about to lose WAL (max_slot_wal_keep_size): start or speed up the relay now"
		}
		add(c)
	}
	add(gap.check())
	return r, nil
}

// checkMigrations reports the schema's migration version, and whether 00001
// (which creates the events table) is applied.
func checkMigrations(ctx context.Context, databaseURL, schema string) (Check, bool) {
	c := Check{Name: "migrations", Status: OK}
	cur, err := migrations.CurrentVersion(ctx, databaseURL, schema)
	latest := migrations.Latest()
	if err != nil {
		c.Status, c.Detail = Fail, err.Error()
		c.Fix = fmt.Sprintf("run `outbox migrate up --database-url URL --schema %s` (URL: the database doctor checked)", schema)
		return c, false
	}
	c.Detail = fmt.Sprintf("schema %s at version %d of %d", schema, cur, latest)
	if cur < latest {
		c.Status = Fail
		c.Fix = fmt.Sprintf("run `outbox migrate up --database-url URL --schema %s` (URL: the database doctor checked) (or goose -dir migrations postgres \"...?search_path=%s\" up after CREATE SCHEMA %s)", schema, schema, schema)
	}
	return c, cur >= 1
}

// checkPublication says whether the publication exists and streams inserts of
// the events table as the partition root, and gives the DBA's statement when
// it does not: the migrating role may lack the CREATE on the database that
// CREATE PUBLICATION needs (migrate up --publication-by-dba).
func checkPublication(opts Options, pub sql.DoctorPublicationRow, exists, migrated bool) Check {
	c := Check{Name: "publication", Status: OK, Detail: opts.Publication + " publishes " + opts.Schema + ".events inserts via the partition root"}
	create := migrations.PublicationSQL(opts.Schema, opts.Publication) + ";"
	switch {
	case !exists && !migrated:
		c.Status, c.Detail = Fail, "publication "+opts.Publication+" is missing"
		c.Fix = fmt.Sprintf("run `outbox migrate up --database-url URL --schema %s` (URL: the database doctor checked) first: it creates the publication, or with --publication-by-dba leaves it to the DBA, who then runs: %s", opts.Schema, create)
	case !exists:
		c.Status, c.Detail = Fail, "publication "+opts.Publication+" is missing"
		c.Fix = "the DBA (a superuser, or a member of the events table's owner with CREATE on the database) runs: " + create
	case !pub.ViaRoot || !pub.HasEvents || !pub.PublishesInsert:
		// pg_publication_tables lists the leaf partitions instead of events
		// when the publication does not publish via the root.
		var what []string
		if !pub.ViaRoot {
			what = append(what, "does not publish via the partition root (events would arrive named by their day partition)")
		} else if !pub.HasEvents {
			what = append(what, "does not cover "+opts.Schema+".events")
		}
		if !pub.PublishesInsert {
			what = append(what, "does not publish inserts")
		}
		c.Status, c.Detail = Fail, opts.Publication+" "+strings.Join(what, " and ")
		name := opts.Publication
		if !plainIdent.MatchString(name) {
			name = pgx.Identifier{name}.Sanitize()
		}
		c.Fix = fmt.Sprintf("the DBA runs: ALTER PUBLICATION %s SET TABLE %s.events; ALTER PUBLICATION %s SET (publish = 'insert', publish_via_partition_root = true);",
			name, opts.Schema, name)
	}
	return c
}

// plainIdent is a name SQL takes without quotes (reserved words aside).
var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func bytesStr(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
