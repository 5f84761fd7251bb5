// Package pgcluster starts a real Postgres server for tests and the demo.
//
// It sits under every stage of the pipeline: the writer, relay, eos and sink tests
// and `outbox demo` all get their database from here. A Cluster comes from, in order:
// an explicit URL (OUTBOX_TEST_DATABASE_URL in tests), a throwaway cluster started
// from the machine's Postgres server binaries (initdb into a temp dir, a free port,
// the socket in the temp dir, run as the `postgres` OS user when the process is
// root), or Config.Container when one is set. Every cluster it starts has
// wal_level=logical so the relay can stream from it.
//
// The binary links this package (the demo and `outbox bench relay` use it), so it
// imports no container engine or test library: the testcontainers-go fallback
// lives in internal/testkit/pgcontainer, which only tests import (through internal/testkit/pgtest),
// and scripts/check-deps.sh keeps it that way.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/pgconnect"
)

// Source says where a Cluster's server comes from.
type Source string

const (
	// SourceURL is a server the caller named by URL; the harness neither starts nor stops it.
	SourceURL Source = "url"
	// SourceLocal is a throwaway cluster run from the machine's Postgres binaries.
	SourceLocal Source = "local"
	// SourceContainer is a throwaway server started by Config.Container.
	SourceContainer Source = "container"
)

// ErrNoPostgres is returned by Start when no URL was given, no Postgres server
// binaries were found and Config.Container is unset or found no engine. Its
// message says what to install.
var ErrNoPostgres = errors.New("pgcluster: no Postgres available: set OUTBOX_TEST_DATABASE_URL to a server with wal_level=logical, " +
	"or install the Postgres server binaries (Debian/Ubuntu: `apt-get install -y postgresql`; macOS: `brew install postgresql@16`)")

// ErrNoEngine is what a Config.Container func returns (wrapped) when no
// container engine answers; Start then returns ErrNoPostgres.
var ErrNoEngine = errors.New("pgcluster: no container engine answered")

// Spec is what a server started by Config.Container must run with.
type Spec struct {
	// Settings are the `-c name=value` server settings, defaults included.
	Settings map[string]string
	// HBA are Config.HBA's pg_hba.conf lines; empty means trust for everyone.
	HBA []string
}

// ContainerFunc starts a throwaway server elsewhere (internal/testkit/pgcontainer.Start
// runs one through testcontainers-go) and returns its URL, which must connect as
// a superuser, and a func that removes it. It returns an error wrapping
// ErrNoEngine when it has nowhere to start one.
type ContainerFunc func(ctx context.Context, spec Spec) (url string, stop func(context.Context) error, err error)

// Config says how to get a server. The zero value starts a throwaway cluster from
// local binaries.
type Config struct {
	// URL of an existing server to use instead of starting one. Databases are
	// created on it with CREATE DATABASE. Defaults to empty: start a server.
	URL string
	// BinDir holds initdb, postgres and pg_ctl. Defaults to OUTBOX_PG_BIN, then
	// the directory of `postgres` on PATH, then the newest /usr/lib/postgresql/*/bin.
	BinDir string
	// DataDir keeps the cluster's files between runs (the demo uses it). Defaults
	// to a new temporary directory removed by Stop.
	DataDir string
	// Port to listen on. Defaults to a free port (or the port recorded in DataDir).
	Port int
	// Settings are extra `-c name=value` server settings, applied after the defaults.
	Settings map[string]string
	// HBA are pg_hba.conf lines ("host all app 127.0.0.1/32 scram-sha-256") for
	// every role but postgres: the harness keeps trust for the postgres
	// superuser (socket and 127.0.0.1, replication too), puts these lines after
	// it, and a connection no line matches is rejected. Written at every start;
	// only for a server this package starts. Defaults to empty: initdb's trust
	// for everyone.
	HBA []string
	// Container starts a server when no local binaries are found. Tests get
	// internal/testkit/pgcontainer.Start through internal/testkit/pgtest; the binary leaves it
	// nil so it links no container engine. Defaults to nil: no fallback.
	Container ContainerFunc
	// DisableContainer makes Start ignore Container. Defaults to false.
	DisableContainer bool
	// Logger receives start and stop messages. Defaults to a discarding logger.
	Logger *slog.Logger
}

// Cluster is a running Postgres server.
type Cluster struct {
	source  Source
	baseURL string
	local   *localServer
	stopCtr func(context.Context) error
	logger  *slog.Logger
}

// defaultSettings are what every started cluster runs with: logical WAL for the
// relay, room for many parallel tests' slots, and durability traded for speed
// (fsync off survives a killed server process, which is what the crash tests do,
// but not a machine crash, which no test does).
var defaultSettings = map[string]string{
	"wal_level":                 "logical",
	"max_replication_slots":     "64",
	"max_wal_senders":           "64",
	"max_connections":           "300",
	"fsync":                     "off",
	"full_page_writes":          "off",
	"synchronous_commit":        "on",
	"max_slot_wal_keep_size":    "-1",
	"wal_sender_timeout":        "60s",
	"shared_buffers":            "128MB",
	"log_min_messages":          "warning",
	"logical_decoding_work_mem": "64MB",
}

// Start returns a running server, starting one when cfg.URL is empty.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.URL != "" {
		if len(cfg.HBA) > 0 {
			return nil, fmt.Errorf("pgcluster: Config.HBA needs a server this package starts, not the one at %s", pgconnect.Redact(cfg.URL))
		}
		if err := ping(ctx, cfg.URL); err != nil {
			return nil, fmt.Errorf("pgcluster: connect to %s: %w", pgconnect.Redact(cfg.URL), err)
		}
		return &Cluster{source: SourceURL, baseURL: cfg.URL, logger: logger}, nil
	}
	settings := make(map[string]string, len(defaultSettings)+len(cfg.Settings))
	for k, v := range defaultSettings {
		settings[k] = v
	}
	for k, v := range cfg.Settings {
		settings[k] = v
	}
	binDir, binErr := findBinDir(cfg.BinDir)
	if binErr == nil {
		srv, err := startLocal(ctx, binDir, cfg.DataDir, cfg.Port, settings, cfg.HBA, logger)
		if err != nil {
			return nil, err
		}
		return &Cluster{source: SourceLocal, baseURL: srv.url(), local: srv, logger: logger}, nil
	}
	if cfg.Container == nil || cfg.DisableContainer {
		return nil, fmt.Errorf("%w (looked for binaries: %v)", ErrNoPostgres, binErr)
	}
	url, stop, err := cfg.Container(ctx, Spec{Settings: settings, HBA: cfg.HBA})
	if errors.Is(err, ErrNoEngine) {
		return nil, fmt.Errorf("%w, or start a Docker engine (looked for binaries: %v; %v)", ErrNoPostgres, binErr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("pgcluster: no local binaries (%v); container: %w", binErr, err)
	}
	logger.Info("pgcluster: started postgres container", slog.String("url", pgconnect.Redact(url)))
	return &Cluster{source: SourceContainer, baseURL: url, stopCtr: stop, logger: logger}, nil
}

// Source says where the server came from.
func (c *Cluster) Source() Source { return c.source }

// URL is the connection URL of the server's default database.
func (c *Cluster) URL() string { return c.baseURL }

// DatabaseURL is the URL of the named database on this server.
func (c *Cluster) DatabaseURL(name string) string { return withDatabase(c.baseURL, name) }

// CreateDatabase creates a database and returns its URL. With a standby
// (StartStandby), create databases on the primary: a standby is read-only and
// refuses CREATE DATABASE, and physical replication copies the new database to
// every standby, under the same name.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, c.baseURL)
	if err != nil {
		return "", fmt.Errorf("pgcluster: create database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgcluster: create database %s: %w", name, err)
	}
	return c.DatabaseURL(name), nil
}

// DropDatabase drops a database, first dropping the replication slots that would
// keep it alive and disconnecting its sessions.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.baseURL)
	if err != nil {
		return fmt.Errorf("pgcluster: drop database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	// A slot's walsender must be gone before the slot can be dropped.
	for range 50 {
		_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		if err == nil {
			_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, name)
		}
		var left int
		if err == nil {
			err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, name).Scan(&left)
		}
		if err == nil && left == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("pgcluster: drop database %s: %w", name, err)
	}
	return nil
}

// Stop stops a server the harness started; it leaves a URL server running.
// With a local cluster the temporary directory is removed.
func (c *Cluster) Stop(ctx context.Context) error {
	switch c.source {
	case SourceLocal:
		return c.local.stop(ctx, "fast", true)
	case SourceContainer:
		return c.stopCtr(ctx)
	}
	return nil
}

// Restart stops the server in the given pg_ctl mode ("smart", "fast" or
// "immediate") and starts it again on the same port and data directory. The
// relay's crash tests use "immediate" to kill Postgres mid-stream. Only a local
// cluster can be restarted.
func (c *Cluster) Restart(ctx context.Context, mode string) error {
	if c.source != SourceLocal {
		return fmt.Errorf("pgcluster: restart: only a local cluster can be restarted, this one is %s", c.source)
	}
	if err := c.local.stop(ctx, mode, false); err != nil {
		return err
	}
	return c.local.start(ctx)
}

// PID is the postmaster's process id for a local cluster, 0 otherwise (and 0
// after Kill).
func (c *Cluster) PID() int {
	if c.local == nil {
		return 0
	}
	return c.local.pid()
}

// Port is the TCP port the server listens on, so tests can build multi-host
// URLs (MultiHostURL) that stay valid across failovers. A local cluster keeps
// its port through Restart, Kill and RebuildAsStandbyOf. For a URL or container
// server it is the URL's port, 0 when the URL names none.
func (c *Cluster) Port() int {
	if c.local != nil {
		return c.local.port
	}
	u, err := url.Parse(c.baseURL)
	if err != nil {
		return 0
	}
	port, _ := strconv.Atoi(u.Port())
	return port
}

// Kill SIGKILLs a local cluster's postmaster and its backends, the way a host
// failure takes a primary down: no shutdown checkpoint, and clients and
// standbys see their connections drop. It returns once every server process is
// gone (bounded at about 20s), so the port is free for RebuildAsStandbyOf or
// Restart. The data directory stays until Stop.
func (c *Cluster) Kill() error {
	if c.source != SourceLocal {
		return fmt.Errorf("pgcluster: kill: only a local cluster can be killed, this one is %s", c.source)
	}
	return c.local.kill()
}

func ping(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// withDatabase returns dsn, a postgres:// URL or a keyword/value DSN, naming
// database name instead of its own.
func withDatabase(dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// keyword/value DSN: a later dbname wins.
		return strings.TrimSpace(dsn) + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}
