// Package migrations holds the goose SQL migrations for every table the pipeline
// owns (the writer's events and idempotency keys, the sink's ledger), embedded in
// the binary, and runs them into a schema the DBA names.
//
// The files are plain goose SQL: `outbox migrate` runs them, and so does the goose
// CLI (`goose -dir migrations postgres "postgres://...?search_path=outbox" up`,
// after `CREATE SCHEMA outbox`). Objects are created unqualified, in the first
// schema of search_path, and goose's version table lives in that schema too, so
// two schemas in one database migrate independently. Landed files are never
// edited: a change is a new file.
//
// A migrating role without CREATE on the database works too (the DBA path in
// docs/operations.md): the DBA creates the schema owned by that role, the role
// migrates with Options.PublicationByDBA (the session setting
// PublicationSetting), and the DBA then creates the publication with
// PublicationSQL. Status and Version only read, so a role with USAGE on the
// schema and SELECT on goose_db_version can run them.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS

// DefaultSchema is the schema migrations run into when none is named.
const DefaultSchema = "outbox"

// ErrBadSchema is returned when a schema name is not a plain SQL identifier.
var ErrBadSchema = errors.New("migrations: schema must match [a-z_][a-z0-9_]{0,62}")

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidateSchema reports whether name can be used as the outbox schema. Names are
// kept to lower-case identifiers so they need no quoting in any tool a DBA uses.
func ValidateSchema(name string) error {
	if !schemaRE.MatchString(name) {
		return fmt.Errorf("%w, got %q", ErrBadSchema, name)
	}
	return nil
}

// PublicationSetting is the session setting that lets migration 00001 leave
// the publication to the DBA: with it set to "dba", a role without CREATE on
// the database (which CREATE PUBLICATION needs) skips the statement instead of
// failing, and raises it as a NOTICE. A role that has the privilege creates the
// publication either way. Options.PublicationByDBA sets it; with the plain
// goose CLI put it in the URL: "postgres://...?search_path=outbox&options=-c%20outbox.publication%3Ddba".
const PublicationSetting = "outbox.publication"

// ErrPrivilege is returned by Up, before anything is applied, when the
// migrating role lacks a privilege a pending migration needs: to create the
// schema, to create objects in it, or to create the publication. The message
// says what the DBA grants or runs.
var ErrPrivilege = errors.New("migrations: the migrating role lacks a privilege")

// Options for OpenWithOptions.
type Options struct {
	// Schema the migrations run into. It is created by Up when missing (which
	// needs CREATE on the database); a DBA may create it beforehand with
	// `CREATE SCHEMA name AUTHORIZATION role`. Defaults to DefaultSchema.
	Schema string
	// Logger receives goose's progress messages. Defaults to none.
	Logger *slog.Logger
	// PublicationByDBA leaves the publication to the DBA when the migrating
	// role lacks CREATE on the database: Up then applies 00001 without it, and
	// PublicationForDBA returns the statement the DBA runs afterwards. A role
	// with the privilege creates the publication anyway. Defaults to false: Up
	// fails with ErrPrivilege rather than leave the relay without a publication.
	PublicationByDBA bool
}

// Migrator runs the embedded migrations against one database and schema.
type Migrator struct {
	db       *sql.DB
	provider *goose.Provider
	opts     Options
	schema   string
}

// Open connects to databaseURL and prepares to migrate schema (DefaultSchema
// when empty). It is OpenWithOptions with only Schema and Logger set.
func Open(ctx context.Context, databaseURL, schema string, logger *slog.Logger) (*Migrator, error) {
	return OpenWithOptions(ctx, databaseURL, Options{Schema: schema, Logger: logger})
}

// OpenWithOptions connects to databaseURL and prepares to migrate opts.Schema.
// It changes nothing in the database: Up creates what is missing, and Status
// and Version only read. Close the Migrator after use.
func OpenWithOptions(ctx context.Context, databaseURL string, opts Options) (*Migrator, error) {
	if opts.Schema == "" {
		opts.Schema = DefaultSchema
	}
	schema := opts.Schema
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("migrations: parse database url: %w", err)
	}
	cfg.RuntimeParams["search_path"] = schema
	if opts.PublicationByDBA {
		cfg.RuntimeParams[PublicationSetting] = "dba"
	}
	db := stdlib.OpenDB(*cfg)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrations: connect: %w", err)
	}
	// One migrator at a time per schema: two deploys racing must not both run a file.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID(schema)))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrations: locker: %w", err)
	}
	popts := []goose.ProviderOption{goose.WithSessionLocker(locker)}
	if opts.Logger != nil {
		popts = append(popts, goose.WithSlog(opts.Logger))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS, popts...)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return &Migrator{db: db, provider: p, opts: opts, schema: schema}, nil
}

// lockID derives the advisory lock id from the schema so different schemas do
// not wait for each other.
func lockID(schema string) int64 {
	var h int64 = 5887940537704921958 // goose's default lock id
	for _, c := range schema {
		h = h*31 + int64(c)
	}
	return h
}

// Close releases the database connection.
func (m *Migrator) Close() error { return m.provider.Close() }

// Up applies every pending migration. On an up-to-date schema it does nothing
// and needs no privilege beyond reading goose's version table. Otherwise it
// first creates the schema when it is missing, and checks that the role may
// do what the pending migrations need, returning ErrPrivilege before applying
// anything when it may not.
func (m *Migrator) Up(ctx context.Context) ([]*goose.MigrationResult, error) {
	st, err := m.Status(ctx)
	if err != nil {
		return nil, err
	}
	pending := map[int64]bool{}
	for _, s := range st {
		if s.State == goose.StatePending {
			pending[s.Source.Version] = true
		}
	}
	if len(pending) == 0 {
		return nil, nil
	}
	if err := m.preflight(ctx, pending[1]); err != nil {
		return nil, err
	}
	res, err := m.provider.Up(ctx)
	if err != nil {
		return res, fmt.Errorf("migrations: up %s: %w", m.schema, err)
	}
	return res, nil
}

// preflight creates a missing schema and checks the privileges the pending
// migrations need, so a restricted role gets the DBA's statement instead of a
// bare "permission denied" from the middle of a migration.
func (m *Migrator) preflight(ctx context.Context, publication bool) error {
	var (
		role, database             string
		schemaExists               bool
		createInDB, createInSchema bool
	)
	err := m.db.QueryRowContext(ctx, `SELECT current_user, current_database(),
		has_database_privilege(current_database(), 'CREATE'),
		EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)`, m.schema).
		Scan(&role, &database, &createInDB, &schemaExists)
	if err != nil {
		return fmt.Errorf("migrations: read privileges: %w", err)
	}
	if !schemaExists {
		if !createInDB {
			return fmt.Errorf("%w: schema %s does not exist and role %s may not create it (no CREATE on database %s); the DBA runs: CREATE SCHEMA %s AUTHORIZATION %s;",
				ErrPrivilege, m.schema, role, database, m.schema, role)
		}
		if _, err := m.db.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{m.schema}.Sanitize()); err != nil && !isCode(err, "23505") {
			return fmt.Errorf("migrations: create schema %s: %w", m.schema, err)
		}
	}
	if err := m.db.QueryRowContext(ctx, `SELECT has_schema_privilege($1, 'CREATE')`, m.schema).Scan(&createInSchema); err != nil {
		return fmt.Errorf("migrations: read privileges: %w", err)
	}
	if !createInSchema {
		return fmt.Errorf("%w: role %s may not create objects in schema %s; the DBA runs: ALTER SCHEMA %s OWNER TO %s;",
			ErrPrivilege, role, m.schema, m.schema, role)
	}
	if publication && !createInDB && !m.opts.PublicationByDBA {
		return fmt.Errorf("%w: migration 00001 creates the publication %s, which needs CREATE on database %s that role %s lacks; "+
			"either the DBA grants it (GRANT CREATE ON DATABASE %s TO %s;) or migrate with Options.PublicationByDBA (outbox migrate up --publication-by-dba) and the DBA then runs: %s;",
			ErrPrivilege, PublicationName(m.schema), database, role, database, role, PublicationSQL(m.schema, ""))
	}
	return nil
}

// Down rolls back the latest applied migration. It returns an error wrapping
// goose.ErrNoNextVersion when nothing is applied.
func (m *Migrator) Down(ctx context.Context) (*goose.MigrationResult, error) {
	if ok, err := m.schemaExists(ctx); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("schema does not exist: %w", goose.ErrNoNextVersion)
		}
		return nil, fmt.Errorf("migrations: down %s: %w", m.schema, err)
	}
	res, err := m.provider.Down(ctx)
	if err != nil {
		return res, fmt.Errorf("migrations: down %s: %w", m.schema, err)
	}
	return res, nil
}

// DownTo rolls back every migration above version (0 rolls back all). A
// migrated schema whose publication the DBA created (Options.PublicationByDBA)
// needs the DBA to drop it before 00001 can be rolled back: only the owner of
// a publication may drop it.
func (m *Migrator) DownTo(ctx context.Context, version int64) ([]*goose.MigrationResult, error) {
	if ok, err := m.schemaExists(ctx); err != nil || !ok {
		if err != nil {
			err = fmt.Errorf("migrations: down to %d in %s: %w", version, m.schema, err)
		}
		return nil, err // no schema: nothing to roll back
	}
	res, err := m.provider.DownTo(ctx, version)
	if err != nil {
		return res, fmt.Errorf("migrations: down to %d in %s: %w", version, m.schema, err)
	}
	return res, nil
}

func (m *Migrator) schemaExists(ctx context.Context) (bool, error) {
	var ok bool
	err := m.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)`, m.schema).Scan(&ok)
	return ok, err
}

// Status lists every embedded migration and whether it is applied. It only
// reads: it needs USAGE on the schema and SELECT on goose's version table, and
// a schema or version table that does not exist yet means every migration is
// pending (goose's own Status would create the version table).
func (m *Migrator) Status(ctx context.Context) ([]*goose.MigrationStatus, error) {
	applied, err := readApplied(ctx, m.db, m.schema)
	if err != nil {
		return nil, err
	}
	var st []*goose.MigrationStatus
	for _, src := range m.provider.ListSources() {
		s := &goose.MigrationStatus{Source: src, State: goose.StatePending}
		if at, ok := applied[src.Version]; ok {
			s.State, s.AppliedAt = goose.StateApplied, at
		}
		st = append(st, s)
	}
	return st, nil
}

// Version returns the applied version and the latest embedded version. Like
// Status it only reads.
func (m *Migrator) Version(ctx context.Context) (current, latest int64, err error) {
	applied, err := readApplied(ctx, m.db, m.schema)
	if err != nil {
		return 0, 0, err
	}
	return maxVersion(applied), Latest(), nil
}

// readApplied reads goose's version table in schema without creating
// anything: the applied versions and when each was applied, none when the
// schema or the table does not exist. A version counts as applied when its
// latest row says so (goose deletes the row on down; older goose versions
// inserted is_applied = false). It reads goose's own table, which sqlc does
// not know, hence plain SQL.
func readApplied(ctx context.Context, db *sql.DB, schema string) (map[int64]time.Time, error) {
	var exists bool
	err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = 'goose_db_version')`, schema).Scan(&exists)
	if err != nil {
		return nil, fmt.Errorf("migrations: read version of %s: %w", schema, err)
	}
	applied := map[int64]time.Time{}
	if !exists {
		return applied, nil
	}
	rows, err := db.QueryContext(ctx, `SELECT DISTINCT ON (version_id) version_id, is_applied, tstamp FROM `+
		pgx.Identifier{schema, "goose_db_version"}.Sanitize()+` WHERE version_id > 0 ORDER BY version_id, id DESC`)
	if err != nil {
		return nil, fmt.Errorf("migrations: read version of %s: %w", schema, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			v  int64
			ok bool
			at time.Time
		)
		if err := rows.Scan(&v, &ok, &at); err != nil {
			return nil, fmt.Errorf("migrations: read version of %s: %w", schema, err)
		}
		if ok {
			applied[v] = at
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrations: read version of %s: %w", schema, err)
	}
	return applied, nil
}

func maxVersion(applied map[int64]time.Time) int64 {
	var v int64
	for n := range applied {
		v = max(v, n)
	}
	return v
}

// PublicationForDBA returns the statement that creates the schema's
// publication when the events table exists but the publication does not (00001
// left it to the DBA under Options.PublicationByDBA), and "" when there is
// nothing for the DBA to do. Call it after Up and show the statement.
func (m *Migrator) PublicationForDBA(ctx context.Context) (string, error) {
	var tableExists, pubExists bool
	err := m.db.QueryRowContext(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = 'events'),
		EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $2)`, m.schema, PublicationName(m.schema)).
		Scan(&tableExists, &pubExists)
	if err != nil {
		return "", fmt.Errorf("migrations: look up publication %s: %w", PublicationName(m.schema), err)
	}
	if !tableExists || pubExists {
		return "", nil
	}
	return PublicationSQL(m.schema, "") + ";", nil
}

// PublicationName is the publication migration 00001 creates for schema.
func PublicationName(schema string) string { return schema + "_events" }

// PublicationSQL is the statement that creates the publication the relay
// streams (publication defaults to PublicationName(schema) when empty): the
// statement migration 00001 runs, and the one a DBA runs in its stead. It has
// no trailing semicolon. Run it as a superuser, or as a role with CREATE on
// the database that owns schema.events (or is a member of its owner).
func PublicationSQL(schema, publication string) string {
	if publication == "" {
		publication = PublicationName(schema)
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s.events WITH (publish = 'insert', publish_via_partition_root = true)",
		quoteIdent(publication), quoteIdent(schema))
}

var plainIdentRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// quoteIdent quotes a name only when it needs it, as format('%I') does, so
// the statements printed for a DBA read like the ones in the docs. (A name
// that is a reserved word would still need quotes; schema names are checked
// by ValidateSchema, publication names come from the operator.)
func quoteIdent(name string) string {
	if plainIdentRE.MatchString(name) {
		return name
	}
	return pgx.Identifier{name}.Sanitize()
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// Latest is the highest embedded migration version.
func Latest() int64 {
	entries, _ := FS.ReadDir(".")
	var v int64
	for _, e := range entries {
		var n int64
		if _, err := fmt.Sscanf(e.Name(), "%d_", &n); err == nil && n > v {
			v = n
		}
	}
	return v
}

// Create writes a new, empty, sequentially numbered SQL migration into dir (the
// source tree's migrations folder) and returns nothing else: the file is for a
// person to fill in and commit.
func Create(dir, name string) error {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("migrations: create: %s is not a directory; run from the repository root or pass --dir", dir)
	}
	goose.SetSequential(true)
	if err := goose.Create(nil, dir, name, "sql"); err != nil {
		return fmt.Errorf("migrations: create %s: %w", name, err)
	}
	return nil
}

// CurrentVersion reads the applied version of schema without changing
// anything (no schema or version table is created): 0 when never migrated.
func CurrentVersion(ctx context.Context, databaseURL, schema string) (int64, error) {
	if err := ValidateSchema(schema); err != nil {
		return 0, err
	}
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return 0, fmt.Errorf("migrations: parse database url: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	applied, err := readApplied(ctx, db, schema)
	if err != nil {
		return 0, err
	}
	return maxVersion(applied), nil
}
