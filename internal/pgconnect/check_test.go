package pgconnect_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
	"github.com/outboxrelay/outbox/internal/pgconnect"
	"github.com/outboxrelay/outbox/internal/testkit/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	stopAuth()
	os.Exit(code)
}

// The passwords every message is searched for. The second is the decoded form
// of one that is percent-encoded in URLs.
const (
	password       = "Tr0ub4dor-and-3-do-not-print"
	trickyPassword = "p@ss/w?rd&do-not-print"
)

// checkTimeout bounds each Check; every case must fail well inside it.
const checkTimeout = 3 * time.Second

// authServer is a Postgres server of this test binary's own whose pg_hba.conf
// asks for scram-sha-256 passwords, with roles for each way a login fails.
type authServer struct {
	hostPort string // 127.0.0.1:port
	admin    string // superuser URL (trust)
}

var (
	authOnce sync.Once
	auth     *authServer
	authErr  error
)

// The roles authServer creates, and the pg_hba.conf lines they log in by.
// "stranger" exists but no line lets it in; "ghost" has a trust line but no role.
var authHBA = []string{
	"host all app,repl,tricky,nologin,limited 127.0.0.1/32 scram-sha-256",
	"host all ghost 127.0.0.1/32 trust",
}

func startAuthServer(t *testing.T) *authServer {
	t.Helper()
	authOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// One server for the whole binary: stopped by TestMain's pgtest.Main
		// through stopAuth.
		c, err := pgtest.Start(ctx, pgcluster.Config{HBA: authHBA})
		if err != nil {
			authErr = err
			return
		}
		stopAuth = func() { _ = c.Stop(context.Background()) }
		u, err := url.Parse(c.URL())
		if err != nil {
			authErr = err
			return
		}
		conn, err := pgx.Connect(ctx, c.URL())
		if err != nil {
			authErr = err
			return
		}
		defer conn.Close(context.Background())
		for _, stmt := range []string{
			`SET password_encryption = 'scram-sha-256'`,
			`CREATE ROLE app LOGIN PASSWORD '` + password + `'`,
			`CREATE ROLE repl LOGIN REPLICATION PASSWORD '` + password + `'`,
			`CREATE ROLE tricky LOGIN PASSWORD '` + trickyPassword + `'`,
			`CREATE ROLE nologin NOLOGIN PASSWORD '` + password + `'`,
			`CREATE ROLE limited LOGIN CONNECTION LIMIT 0 PASSWORD '` + password + `'`,
			`CREATE ROLE stranger LOGIN PASSWORD '` + password + `'`,
			`CREATE DATABASE locked`,
			`REVOKE CONNECT ON DATABASE locked FROM PUBLIC`,
		} {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				authErr = fmt.Errorf("%s: %w", stmt, err)
				return
			}
		}
		auth = &authServer{hostPort: u.Host, admin: c.URL()}
	})
	if authErr != nil {
		t.Fatalf("this test needs a Postgres server with password authentication: %v", authErr)
	}
	return auth
}

var stopAuth = func() {}

// url is a URL to the auth server as user with pw (none when empty).
func (s *authServer) url(user, pw, db string, query ...string) string {
	u := url.URL{Scheme: "postgres", Host: s.hostPort, Path: "/" + db}
	if pw != "" {
		u.User = url.UserPassword(user, pw)
	} else {
		u.User = url.User(user)
	}
	u.RawQuery = strings.Join(append([]string{"sslmode=disable"}, query...), "&")
	return u.String()
}

// check runs Check and asserts what every failure must be: a wrapped sentinel,
// one line, no password in any form, well inside the timeout.
func check(t *testing.T, databaseURL string, want error, opts ...pgconnect.Option) string {
	t.Helper()
	start := time.Now()
	err := pgconnect.Check(context.Background(), databaseURL, checkTimeout, opts...)
	took := time.Since(start)
	require.Less(t, took, checkTimeout+time.Second, "Check took %s", took)
	require.Error(t, err)
	require.ErrorIs(t, err, want, "got: %v", err)
	msg := err.Error()
	require.NotContains(t, msg, "\n", "one line")
	for _, secret := range []string{password, trickyPassword, url.QueryEscape(trickyPassword), url.PathEscape(trickyPassword), "wrong-" + password} {
		require.NotContains(t, msg, secret)
	}
	require.NotContains(t, msg, "do-not-print")
	t.Logf("%s (%s)", msg, took.Round(time.Millisecond))
	return msg
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestCheckSucceeds(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	ctx := context.Background()
	require.NoError(t, pgconnect.Check(ctx, dbURL, checkTimeout))
	require.NoError(t, pgconnect.Check(ctx, dbURL, checkTimeout, pgconnect.Replication()))
	require.NoError(t, pgconnect.Check(ctx, dbURL, 0), "zero timeout means the default")
	// pgxpool's parameters are part of the URL the sink accepts.
	require.NoError(t, pgconnect.Check(ctx, withQuery(dbURL, "pool_max_conns=4"), checkTimeout))

	s := startAuthServer(t)
	require.NoError(t, pgconnect.Check(ctx, s.url("app", password, "postgres"), checkTimeout))
	require.NoError(t, pgconnect.Check(ctx, s.url("repl", password, "postgres"), checkTimeout, pgconnect.Replication()))
	require.NoError(t, pgconnect.Check(ctx, s.url("tricky", trickyPassword, "postgres"), checkTimeout))
	host, port, _ := net.SplitHostPort(s.hostPort)
	require.NoError(t, pgconnect.Check(ctx, fmt.Sprintf("host=%s port=%s user=app password='%s' dbname=postgres sslmode=disable", host, port, password), checkTimeout))
}

func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}

func TestCheckBadURL(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ url, says string }{
		"empty":             {"  ", "it is empty"},
		"port not a number": {"postgres://app:" + password + "@127.0.0.1:notaport/db", "invalid port"},
		"bad escape":        {"postgres://app:" + password + "%zz@127.0.0.1:5432/db", "invalid percent-encoded token in password"},
		"dsn port":          {"host=127.0.0.1 port=abc user=app password=" + password + " dbname=db", "invalid port"},
		"dsn quote":         {"host=127.0.0.1 user=app password='" + password + " dbname=db", "unterminated quoted string"},
		"sslmode":           {"postgres://app:" + password + "@127.0.0.1/db?sslmode=sometimes", "sslmode is invalid"},
		"pool parameter":    {"postgres://app:" + password + "@127.0.0.1/db?pool_max_conns=many", "pool_max_conns"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			msg := check(t, tc.url, pgconnect.ErrBadURL)
			require.Contains(t, msg, tc.says)
			require.Contains(t, msg, "--database-url")
		})
	}
}

func TestCheckHostNotFound(t *testing.T) {
	t.Parallel()
	msg := check(t, "postgres://app:"+password+"@no-such-host.invalid:5432/db", pgconnect.ErrUnreachable)
	require.Contains(t, msg, `cannot resolve host "no-such-host.invalid"`)
	require.Contains(t, msg, "postgres://app:xxxxx@no-such-host.invalid:5432/db")
}

func TestCheckRefused(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	msg := check(t, "postgres://app:"+password+"@"+addr+"/db", pgconnect.ErrUnreachable)
	require.Contains(t, msg, "connection refused at "+addr)
	require.Contains(t, msg, "is the server running on "+addr)

	// Multi-host: every host named, the one password hidden.
	other := freeAddr(t)
	msg = check(t, "postgres://app:"+password+"@"+addr+","+other+"/db?sslmode=disable", pgconnect.ErrUnreachable)
	require.Contains(t, msg, "connection refused at "+addr+","+other)
	require.Contains(t, msg, "postgres://app:xxxxx@"+addr+","+other+"/db")

	// A replication check fails the same way.
	check(t, "postgres://app:"+password+"@"+addr+"/db", pgconnect.ErrUnreachable, pgconnect.Replication())
}

// TestCheckTimeout: a listener that accepts and never answers (a hung server,
// a half-open path) is reported within the timeout.
func TestCheckTimeout(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	start := time.Now()
	err = pgconnect.Check(context.Background(), "postgres://app:"+password+"@"+l.Addr().String()+"/db", 500*time.Millisecond)
	require.Less(t, time.Since(start), 2*time.Second)
	require.ErrorIs(t, err, pgconnect.ErrUnreachable)
	require.Contains(t, err.Error(), "no answer from "+l.Addr().String()+" within 500ms")
	require.NotContains(t, err.Error(), password)

	// The URL's connect_timeout, when shorter, is the bound the message names.
	err = pgconnect.Check(context.Background(), "postgres://app:"+password+"@"+l.Addr().String()+"/db?connect_timeout=1", checkTimeout)
	require.ErrorIs(t, err, pgconnect.ErrUnreachable)
	require.Contains(t, err.Error(), "within 1s")
}

func TestCheckAuth(t *testing.T) {
	t.Parallel()
	s := startAuthServer(t)
	host, port, _ := net.SplitHostPort(s.hostPort)

	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		msg := check(t, s.url("app", "wrong-"+password, "postgres"), pgconnect.ErrAuth)
		require.Contains(t, msg, `rejected the password of user "app"`)
		require.Contains(t, msg, "SQLSTATE 28P01")
		require.Contains(t, msg, "postgres://app:xxxxx@"+s.hostPort+"/postgres")
		var pgErr *pgconn.PgError
		require.True(t, errors.As(pgconnect.Check(context.Background(), s.url("app", "wrong", "postgres"), checkTimeout), &pgErr))
		require.Equal(t, "28P01", pgErr.Code)
	})
	t.Run("wrong password, percent-encoded", func(t *testing.T) {
		t.Parallel()
		check(t, s.url("tricky", trickyPassword+"x", "postgres"), pgconnect.ErrAuth)
	})
	t.Run("wrong password, key=value", func(t *testing.T) {
		t.Parallel()
		msg := check(t, fmt.Sprintf("host=%s port=%s user=app password='wrong-%s' dbname=postgres sslmode=disable", host, port, password), pgconnect.ErrAuth)
		require.Contains(t, msg, "password=xxxxx")
	})
	t.Run("no password", func(t *testing.T) {
		t.Parallel()
		check(t, s.url("app", "", "postgres"), pgconnect.ErrAuth)
	})
	t.Run("no pg_hba entry", func(t *testing.T) {
		t.Parallel()
		msg := check(t, s.url("stranger", password, "postgres"), pgconnect.ErrAuth)
		require.Contains(t, msg, `no pg_hba.conf line on the server at `+s.hostPort+` lets user "stranger" into database "postgres"`)
		require.Contains(t, msg, "SQLSTATE 28000")
		require.Contains(t, msg, `"host postgres stranger <this host's address>/32 scram-sha-256"`)
	})
	t.Run("role does not exist", func(t *testing.T) {
		t.Parallel()
		msg := check(t, s.url("ghost", password, "postgres"), pgconnect.ErrNoRole)
		require.Contains(t, msg, `role "ghost" does not exist`)
		require.Contains(t, msg, `CREATE ROLE "ghost" LOGIN`)
	})
	t.Run("role may not log in", func(t *testing.T) {
		t.Parallel()
		msg := check(t, s.url("nologin", password, "postgres"), pgconnect.ErrAuth)
		require.Contains(t, msg, `ALTER ROLE "nologin" LOGIN`)
	})
	t.Run("database does not exist", func(t *testing.T) {
		t.Parallel()
		msg := check(t, s.url("app", password, "no_such_db"), pgconnect.ErrNoDatabase)
		require.Contains(t, msg, `database "no_such_db" does not exist`)
		require.Contains(t, msg, "SQLSTATE 3D000")
		require.Contains(t, msg, `CREATE DATABASE "no_such_db"`)
	})
	t.Run("no REPLICATION", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, pgconnect.Check(context.Background(), s.url("app", password, "postgres"), checkTimeout), "a plain connection is fine")
		msg := check(t, s.url("app", password, "postgres"), pgconnect.ErrPermission, pgconnect.Replication())
		require.Contains(t, msg, `role "app" may not open a replication connection`)
		require.Contains(t, msg, `ALTER ROLE "app" WITH REPLICATION`)
		require.Contains(t, msg, `GRANT rds_replication TO "app"`)
	})
	t.Run("no CONNECT", func(t *testing.T) {
		t.Parallel()
		msg := check(t, s.url("app", password, "locked"), pgconnect.ErrPermission)
		require.Contains(t, msg, `GRANT CONNECT ON DATABASE "locked" TO "app"`)
	})
	t.Run("too many connections", func(t *testing.T) {
		t.Parallel()
		msg := check(t, s.url("limited", password, "postgres"), pgconnect.ErrUnreachable)
		require.Contains(t, msg, "SQLSTATE 53300")
	})
	t.Run("TLS refused", func(t *testing.T) {
		t.Parallel()
		u := strings.Replace(s.url("app", password, "postgres"), "sslmode=disable", "sslmode=require", 1)
		msg := check(t, u, pgconnect.ErrTLS)
		require.Contains(t, msg, "does not accept TLS, which sslmode=require requires")
	})
	t.Run("no database on a given URL", func(t *testing.T) {
		t.Parallel()
		// The shared server (or OUTBOX_TEST_DATABASE_URL's) with its own
		// credentials and a database that is not there.
		check(t, pgtest.Cluster(t).DatabaseURL("no_such_db_here"), pgconnect.ErrNoDatabase)
	})
}

func TestCheckContextEnds(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := pgconnect.Check(ctx, startAuthServer(t).url("app", password, "postgres"), checkTimeout)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, pgconnect.ErrUnreachable)
	require.NotContains(t, err.Error(), password)
}

func TestWait(t *testing.T) {
	t.Parallel()
	s := startAuthServer(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Run("a setting that cannot work ends it at once", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		err := pgconnect.Wait(context.Background(), s.url("app", "wrong", "postgres"), checkTimeout, logger)
		require.ErrorIs(t, err, pgconnect.ErrAuth)
		require.Less(t, time.Since(start), checkTimeout)
		require.ErrorIs(t, pgconnect.Wait(context.Background(), "postgres://h:x/db", checkTimeout, logger), pgconnect.ErrBadURL)
	})
	t.Run("an outage is waited out", func(t *testing.T) {
		t.Parallel()
		// Nothing listens on addr until, after a first refused Check, a proxy
		// to the server opens there.
		addr := freeAddr(t)
		done := make(chan struct{})
		t.Cleanup(func() { close(done) })
		go proxy(addr, s.hostPort, 500*time.Millisecond, done)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		u := "postgres://repl:" + password + "@" + addr + "/postgres?sslmode=disable"
		require.ErrorIs(t, pgconnect.Check(ctx, u, checkTimeout), pgconnect.ErrUnreachable)
		require.NoError(t, pgconnect.Wait(ctx, u, checkTimeout, logger, pgconnect.Replication()))
	})
	t.Run("ctx ends the wait", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		err := pgconnect.Wait(ctx, "postgres://app@"+freeAddr(t)+"/db", checkTimeout, logger)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

// proxy listens on addr after delay and forwards each connection to target
// until done closes.
func proxy(addr, target string, delay time.Duration, done <-chan struct{}) {
	select {
	case <-time.After(delay):
	case <-done:
		return
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return // the Wait then fails and says so
	}
	go func() {
		<-done
		l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			_, _ = io.Copy(c, up)
		}()
	}
}
