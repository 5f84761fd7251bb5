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

	"github.com/jackc/pgx/v5"
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

// Migrator runs the embedded migrations against one database and schema.
type Migrator struct {
	db       *sql.DB
	provider *goose.Provider
	schema   string
}

// Open connects to databaseURL and prepares to migrate schema (DefaultSchema when
// empty), creating the schema when it does not exist. Close the Migrator after use.
func Open(ctx context.Context, databaseURL, schema string, logger *slog.Logger) (*Migrator, error) {
	if schema == "" {
		schema = DefaultSchema
	}
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("migrations: parse database url: %w", err)
	}
	cfg.RuntimeParams["search_path"] = schema
	db := stdlib.OpenDB(*cfg)
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrations: create schema %s: %w", schema, err)
	}
	// One migrator at a time per schema: two deploys racing must not both run a file.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID(schema)))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrations: locker: %w", err)
	}
	opts := []goose.ProviderOption{goose.WithSessionLocker(locker)}
	if logger != nil {
		opts = append(opts, goose.WithSlog(logger))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS, opts...)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return &Migrator{db: db, provider: p, schema: schema}, nil
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

// Up applies every pending migration. On an up-to-date schema it does nothing.
func (m *Migrator) Up(ctx context.Context) ([]*goose.MigrationResult, error) {
	res, err := m.provider.Up(ctx)
	if err != nil {
		return res, fmt.Errorf("migrations: up %s: %w", m.schema, err)
	}
	return res, nil
}

// Down rolls back the latest applied migration.
func (m *Migrator) Down(ctx context.Context) (*goose.MigrationResult, error) {
	res, err := m.provider.Down(ctx)
	if err != nil {
		return res, fmt.Errorf("migrations: down %s: %w", m.schema, err)
	}
	return res, nil
}

// DownTo rolls back every migration above version (0 rolls back all).
func (m *Migrator) DownTo(ctx context.Context, version int64) ([]*goose.MigrationResult, error) {
	res, err := m.provider.DownTo(ctx, version)
	if err != nil {
		return res, fmt.Errorf("migrations: down to %d in %s: %w", version, m.schema, err)
	}
	return res, nil
}

// Status lists every migration and whether it is applied.
func (m *Migrator) Status(ctx context.Context) ([]*goose.MigrationStatus, error) {
	st, err := m.provider.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: status %s: %w", m.schema, err)
	}
	return st, nil
}

// Version returns the applied version and the latest embedded version.
func (m *Migrator) Version(ctx context.Context) (current, latest int64, err error) {
	current, latest, err = m.provider.GetVersions(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("migrations: version %s: %w", m.schema, err)
	}
	return current, latest, nil
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
// It reads goose's own table, which sqlc does not know, hence plain SQL.
func CurrentVersion(ctx context.Context, databaseURL, schema string) (int64, error) {
	if err := ValidateSchema(schema); err != nil {
		return 0, err
	}
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return 0, fmt.Errorf("migrations: connect: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, schema+".goose_db_version").Scan(&exists); err != nil {
		return 0, fmt.Errorf("migrations: read version of %s: %w", schema, err)
	}
	if !exists {
		return 0, nil
	}
	var v int64
	q := `SELECT coalesce(max(version_id), 0) FROM ` + pgx.Identifier{schema, "goose_db_version"}.Sanitize() + ` WHERE is_applied`
	if err := conn.QueryRow(ctx, q).Scan(&v); err != nil {
		return 0, fmt.Errorf("migrations: read version of %s: %w", schema, err)
	}
	return v, nil
}
