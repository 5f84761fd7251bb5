package pgconnect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/startwait"
)

// DefaultCheckTimeout bounds Check when its timeout is zero: long enough for a
// TLS handshake and a SCRAM exchange on a loaded host, short enough that a bad
// setting fails a start within seconds.
const DefaultCheckTimeout = 10 * time.Second

// fix is where every message sends the reader: the binary's flag and its
// environment variable.
const fix = "--database-url (env OUTBOX_DATABASE_URL)"

// Option changes what Check asks of the connection.
type Option func(*options)

type options struct {
	replication bool
}

// Replication makes Check open a logical replication connection
// (replication=database) and run IDENTIFY_SYSTEM on it, as the relay does, so
// that a role without the REPLICATION attribute fails at start with the
// statement that grants it.
func Replication() Option { return func(o *options) { o.replication = true } }

// Check parses databaseURL (pgx's URL or key=value form, pgxpool's pool_*
// parameters allowed) and connects once, all within timeout
// (DefaultCheckTimeout when zero or less). It returns nil when the server let
// it in, else an error wrapping ErrBadURL, ErrUnreachable, ErrTLS, ErrAuth,
// ErrNoRole, ErrNoDatabase or ErrPermission whose one-line message says what
// to fix (or, for a failure it cannot classify, the driver's error with the
// URL), or one wrapping ctx's error when ctx ends first. No message shows a
// password. Commands call it before starting a stage, because the stages
// retry every connection failure, a wrong password included.
func Check(ctx context.Context, databaseURL string, timeout time.Duration, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	redacted, secrets := redact(databaseURL)
	if strings.TrimSpace(databaseURL) == "" {
		return &checkError{kind: ErrBadURL, msg: fmt.Sprintf("%v: it is empty: pass %s, e.g. postgres://user:password@host:5432/dbname", ErrBadURL, fix)}
	}
	pcfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return &checkError{kind: ErrBadURL, cause: err, msg: fmt.Sprintf("%v: %s in %s: fix %s; the forms are postgres://user:password@host:5432/dbname?sslmode=require and \"host=... port=5432 user=... dbname=...\"",
			ErrBadURL, parseReason(err, databaseURL, redacted, secrets), redacted, fix)}
	}
	cfg := pcfg.ConnConfig.Config.Copy()
	if o.replication {
		cfg.RuntimeParams["replication"] = "database"
	}
	t := target{cfg: cfg, url: redacted, secrets: secrets, replication: o.replication}

	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err == nil {
		if o.replication {
			_, err = pglogrepl.IdentifySystem(cctx, conn)
		} else {
			err = conn.Ping(cctx)
		}
		closeCtx, cancelClose := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = conn.Close(closeCtx)
		cancelClose()
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return &checkError{cause: ctx.Err(), msg: fmt.Sprintf("postgres: check %s: %v", redacted, ctx.Err())}
	}
	return t.explain(err, timeout)
}

// target is what the messages name: addresses, user, database, redacted URL.
type target struct {
	cfg         *pgconn.Config
	url         string
	secrets     []string
	replication bool
}

// at lists the addresses the URL names, without the TLS/plain duplicates pgx
// adds for sslmode=prefer.
func (t target) at() string {
	var addrs []string
	seen := map[string]bool{}
	add := func(host string, port uint16) {
		a := net.JoinHostPort(host, strconv.Itoa(int(port)))
		if strings.HasPrefix(host, "/") {
			_, a = pgconn.NetworkAddress(host, port)
		}
		if !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	add(t.cfg.Host, t.cfg.Port)
	for _, fb := range t.cfg.Fallbacks {
		add(fb.Host, fb.Port)
	}
	return strings.Join(addrs, ",")
}

func (t target) fail(kind, cause error, format string, args ...any) error {
	return &checkError{kind: kind, cause: cause, msg: kind.Error() + ": " + fmt.Sprintf(format, args...)}
}

// explain maps a failed connection to one of the Check errors.
func (t target) explain(err error, timeout time.Duration) error {
	at, u := t.at(), t.url
	var (
		pgErr     *pgconn.PgError
		dnsErr    *net.DNSError
		opErr     *net.OpError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &pgErr):
		return t.explainServer(pgErr)
	case strings.Contains(err.Error(), "server refused TLS connection"):
		return t.fail(ErrTLS, err, "the server at %s does not accept TLS, which sslmode=%s requires (%s): enable ssl on the server, or fix sslmode in %s",
			at, sslmode(t.url), u, fix)
	case errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid), errors.As(err, &verify):
		return t.fail(ErrTLS, err, "the certificate of the server at %s is not accepted (%s) (%s): pass the CA that signed it as sslrootcert=FILE, or fix sslmode, in %s",
			at, scrub(certReason(err), t.secrets), u, fix)
	case errors.As(err, &record):
		return t.fail(ErrTLS, err, "the server at %s does not speak TLS on that port (%s): check the port and sslmode in %s", at, u, fix)
	case errors.As(err, &dnsErr):
		return t.fail(ErrUnreachable, err, "cannot resolve host %q (%s) in %s: check the host in %s", dnsErr.Name, dnsErr.Err, u, fix)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &opErr) && opErr.Timeout():
		if ct := t.cfg.ConnectTimeout; ct > 0 && ct < timeout {
			timeout = ct // the URL's connect_timeout ended it first
		}
		return t.fail(ErrUnreachable, err, "no answer from %s within %s (%s): check the host and port in %s, that the server runs, and that no firewall drops the connection",
			at, timeout, u, fix)
	case errors.Is(err, syscall.ECONNREFUSED):
		return t.fail(ErrUnreachable, err, "connection refused at %s (%s): is the server running on %s and listening there (listen_addresses, port)? Check the host and port in %s",
			at, u, at, fix)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return t.fail(ErrUnreachable, err, "cannot connect to %s (%v) (%s): check the host and port in %s, and that the server runs", at, opErr.Err, u, fix)
	}
	return &checkError{cause: err, msg: fmt.Sprintf("postgres: connect to %s: %s", u, scrub(err.Error(), t.secrets))}
}

// explainServer maps an error the server sent while letting us in.
func (t target) explainServer(pgErr *pgconn.PgError) error {
	at, u := t.at(), t.url
	user, db := t.cfg.User, t.cfg.Database
	said := scrub(pgErr.Message, t.secrets)
	role := pgx.Identifier{user}.Sanitize()
	switch pgErr.Code {
	case "28P01":
		return t.fail(ErrAuth, pgErr, "the server at %s rejected the password of user %q (SQLSTATE 28P01; %s): check the user and password in %s (or PGPASSWORD, ~/.pgpass)",
			at, user, u, fix)
	case "28000":
		switch {
		case strings.Contains(said, "no pg_hba.conf entry"):
			return t.fail(ErrAuth, pgErr, "no pg_hba.conf line on the server at %s lets user %q into database %q from this host (%s) (SQLSTATE 28000; %s): add one, e.g. \"host %s %s <this host's address>/32 scram-sha-256\", and reload it (SELECT pg_reload_conf()), or connect as a user it lets in",
				at, user, db, said, u, db, user)
		case strings.Contains(said, "rejects connection"):
			return t.fail(ErrAuth, pgErr, "pg_hba.conf on the server at %s rejects user %q, database %q from this host (%s) (SQLSTATE 28000; %s): change that line and reload it (SELECT pg_reload_conf()), or connect as a user it lets in",
				at, user, db, said, u)
		case strings.Contains(said, "not permitted to log in"):
			return t.fail(ErrAuth, pgErr, "role %q may not log in on the server at %s (SQLSTATE 28000; %s): as a superuser run ALTER ROLE %s LOGIN, or fix the user in %s",
				user, at, u, role, fix)
		case strings.HasPrefix(said, "role ") && strings.HasSuffix(said, "does not exist"):
			return t.fail(ErrNoRole, pgErr, "role %q does not exist on the server at %s (SQLSTATE 28000; %s): create it (CREATE ROLE %s LOGIN PASSWORD '...') or fix the user in %s",
				user, at, u, role, fix)
		}
		return t.fail(ErrAuth, pgErr, "the server at %s refused user %q: %s (SQLSTATE 28000; %s): check the user in %s and the server's pg_hba.conf", at, user, said, u, fix)
	case "3D000":
		return t.fail(ErrNoDatabase, pgErr, "database %q does not exist on the server at %s (SQLSTATE 3D000; %s): create it (CREATE DATABASE %s, then outbox migrate up) or fix the database name in %s",
			db, at, u, pgx.Identifier{db}.Sanitize(), fix)
	case "42501":
		switch {
		case t.replication && (strings.Contains(said, "WAL sender") || strings.Contains(said, "replication")):
			return t.fail(ErrPermission, pgErr, "role %q may not open a replication connection on the server at %s (%s) (SQLSTATE 42501; %s): the relay streams the WAL; as a superuser run ALTER ROLE %s WITH REPLICATION (on Amazon RDS or Aurora: GRANT rds_replication TO %s)",
				user, at, said, u, role, role)
		case strings.Contains(said, "permission denied for database"):
			return t.fail(ErrPermission, pgErr, "role %q may not connect to database %q on the server at %s (SQLSTATE 42501; %s): as the database's owner run GRANT CONNECT ON DATABASE %s TO %s",
				user, db, at, u, pgx.Identifier{db}.Sanitize(), role)
		}
		return t.fail(ErrPermission, pgErr, "the server at %s refused user %q: %s (SQLSTATE 42501; %s)", at, user, said, u)
	case "53300", "57P03", "57P01", "57P02":
		// too_many_connections, cannot_connect_now (starting, stopping,
		// recovering), admin_shutdown, crash_shutdown: an outage, not a setting.
		return t.fail(ErrUnreachable, pgErr, "the server at %s does not accept connections now: %s (SQLSTATE %s; %s): wait until it is up, or free connections",
			at, said, pgErr.Code, u)
	}
	return &checkError{cause: pgErr, msg: fmt.Sprintf("postgres: the server at %s refused the connection: %s (SQLSTATE %s; %s)", at, said, pgErr.Code, u)}
}

// parseReason is pgx's reason a URL does not parse, without the URL itself
// (its text is only best-effort redacted) and scrubbed of the secrets.
func parseReason(err error, raw, redacted string, secrets []string) string {
	reason := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// "cannot parse `<conn string>`: <reason> (<cause>)"
		if i := strings.LastIndex(reason, "`: "); strings.HasPrefix(reason, "cannot parse `") && i >= 0 {
			reason = reason[i+len("`: "):]
		}
		if cause := errors.Unwrap(pe); cause != nil {
			var ue *url.Error
			if errors.As(cause, &ue) {
				// url.Error repeats the whole URL; its Err says what is wrong.
				reason = strings.Replace(reason, cause.Error(), ue.Err.Error(), 1)
			}
		}
	}
	reason = strings.ReplaceAll(reason, raw, redacted)
	return scrub(reason, secrets)
}

// certReason is the certificate error without pgx's wrapping.
func certReason(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknownCA):
		return unknownCA.Error()
	case errors.As(err, &hostErr):
		return hostErr.Error()
	case errors.As(err, &invalid):
		return invalid.Error()
	}
	return err.Error()
}

// sslmode is the URL's sslmode, for messages; pgx's default is prefer.
func sslmode(redacted string) string {
	for _, sep := range []string{"sslmode=", "sslmode ="} {
		if i := strings.Index(redacted, sep); i >= 0 {
			v := redacted[i+len(sep):]
			v = strings.TrimLeft(v, " '")
			if j := strings.IndexAny(v, "& '"); j >= 0 {
				v = v[:j]
			}
			return v
		}
	}
	return "prefer"
}

// Wait runs Check until the server lets it in, retrying ErrUnreachable with a
// growing pause (about 1s, doubling to 30s) and logging each failure: a
// long-running stage that starts during an outage waits for Postgres instead
// of exiting, while a setting that can never work (ErrBadURL, ErrAuth,
// anything else) ends it at once. When ctx ends first it returns an error
// wrapping ctx.Err().
func Wait(ctx context.Context, databaseURL string, timeout time.Duration, logger *slog.Logger, opts ...Option) error {
	return startwait.Until(ctx, logger, "postgres", "wait for the server", ErrUnreachable, func(ctx context.Context) error { return Check(ctx, databaseURL, timeout, opts...) })
}
