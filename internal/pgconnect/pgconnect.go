// Package pgconnect checks a Postgres connection URL at start: Check parses it
// and connects once (a replication connection when the caller streams WAL), and
// turns a failure into one line that says what is wrong and what to do, so a
// malformed URL, a wrong password or a missing database ends a command at once
// instead of making a stage retry it forever like an outage. Wait is its
// retrying form for long-running stages: it waits out an unreachable server
// and returns anything else.
//
// No message carries a password: each names the URL through Redact.
package pgconnect

import "errors"

// Errors Check returns, each wrapped in a one-line message saying what is
// wrong and what to fix. The message never shows a password. Where the server
// answered, the error also wraps its *pgconn.PgError (errors.As gives the
// SQLSTATE).
var (
	// ErrBadURL is returned when the URL is empty or cannot be parsed (pgx's
	// URL and key=value forms, with pgxpool's pool_* parameters). Retrying
	// cannot help: it is a usage error.
	ErrBadURL = errors.New("postgres: bad database URL")
	// ErrUnreachable is returned when no server answered within the timeout
	// (unresolvable host, connection refused, silence), or the one that
	// answered does not accept connections now (starting up, shutting down,
	// too many connections). It is the one Check error an outage also
	// produces; Wait retries it.
	ErrUnreachable = errors.New("postgres: server unreachable")
	// ErrTLS is returned when the URL asks for TLS (sslmode=require or
	// stricter) and the server refuses it or its certificate is not accepted.
	ErrTLS = errors.New("postgres: TLS failed")
	// ErrAuth is returned when the server rejects the login: a wrong password
	// (SQLSTATE 28P01), no pg_hba.conf line lets this user, database and host
	// in, or one rejects them (28000), or the role may not log in.
	ErrAuth = errors.New("postgres: authentication failed")
	// ErrNoRole is returned when the URL's user is not a role on the server
	// (28000). A server that asks for a password first reports an unknown
	// role as ErrAuth instead, so as not to tell which roles exist.
	ErrNoRole = errors.New("postgres: role does not exist")
	// ErrNoDatabase is returned when the URL's database does not exist on the
	// server (3D000).
	ErrNoDatabase = errors.New("postgres: database does not exist")
	// ErrPermission is returned when the role logged in but lacks a privilege
	// the connection needs (42501): REPLICATION for a replication connection,
	// CONNECT on the database. The message names the statement to run.
	ErrPermission = errors.New("postgres: permission denied")
)

// checkError is a Check error: its message is built here, from redacted
// text only, and it wraps the sentinel and the driver's error.
type checkError struct {
	msg   string
	kind  error
	cause error
}

func (e *checkError) Error() string { return e.msg }

func (e *checkError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.kind, e.cause} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
