package pgcluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// StartStandby starts a streaming physical standby of c, so tests can fail
// over: Kill c, Promote the standby, and RebuildAsStandbyOf c from it. Only a
// local cluster has one (a URL or container server returns an error).
//
// The standby is a pg_basebackup of c (-X stream -R) into a new temporary
// directory, made over 127.0.0.1 as postgres through a physical replication
// slot on c, so c keeps the WAL the standby has not received yet. It runs with
// c's settings (hot standby needs max_connections and the like no lower than
// the primary's, and wal_level=logical stays for when it is promoted) on a
// free port of its own. StartStandby returns once the standby accepts
// connections in recovery.
//
// A standby is read-only: create databases and tables on the primary, and
// physical replication copies them. Stop stops the standby and removes its
// directory. Logical replication slots (the relay's) are not copied: after a
// promotion they have to be made again on the new primary.
func (c *Cluster) StartStandby(ctx context.Context) (*Cluster, error) {
	if c.source != SourceLocal {
		return nil, fmt.Errorf("pgcluster: start standby: only a local cluster can have a standby, this one is %s", c.source)
	}
	p := c.local
	p.mu.Lock()
	settings := make(map[string]string, len(p.settings)+1)
	for k, v := range p.settings {
		settings[k] = v
	}
	p.mu.Unlock()
	settings["hot_standby"] = "on"
	s := &localServer{binDir: p.binDir, settings: settings, cred: p.cred, logger: c.logger}
	dir, err := os.MkdirTemp("", "outbox-pg-standby-")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: temp dir: %w", err)
	}
	s.dir, s.temp = dir, true
	if err := s.chown(s.dir); err != nil {
		s.cleanup()
		return nil, err
	}
	if err := s.baseBackup(ctx, c); err != nil {
		s.cleanup()
		return nil, err
	}
	if s.port, err = freePort(); err != nil {
		s.cleanup()
		return nil, err
	}
	if err := s.startStandby(ctx, false); err != nil {
		_ = s.stop(context.Background(), "immediate", true)
		_ = dropIdleSlot(context.Background(), c.baseURL, s.slotName()) // or c keeps WAL for it forever
		return nil, err
	}
	c.logger.Info("pgcluster: started local standby", slog.String("dir", s.dir), slog.Int("port", s.port), slog.Int("primary_port", p.port))
	return &Cluster{source: SourceLocal, baseURL: s.url(), local: s, logger: c.logger}, nil
}

// Promote ends a standby's recovery (pg_promote) and returns once it takes
// writes, so a test can fail over to it after Kill of its primary.
func (c *Cluster) Promote(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.baseURL)
	if err != nil {
		return fmt.Errorf("pgcluster: promote: %w", err)
	}
	defer conn.Close(context.Background())
	var promoted bool
	if err := conn.QueryRow(ctx, `SELECT pg_promote(true, 60)`).Scan(&promoted); err != nil {
		return fmt.Errorf("pgcluster: promote: %w", err)
	}
	if !promoted {
		return fmt.Errorf("pgcluster: promote: the server on port %d did not finish promoting in 60s", c.Port())
	}
	return waitRecovery(ctx, c.baseURL, false)
}

// RebuildAsStandbyOf turns a killed (or stopped) former primary into a standby
// of primary, the way an operator brings a failed host back after a failover:
// its data directory is wiped and made again by pg_basebackup from primary,
// through a replication slot of its own on primary, and it starts on the same
// port as before. The stable port is the point: a multi-host URL
// (MultiHostURL) listing both servers keeps working across failovers back and
// forth. A c that is still running is stopped (fast) first. It returns an error
// when another process took the port meanwhile.
func (c *Cluster) RebuildAsStandbyOf(ctx context.Context, primary *Cluster) error {
	if c.source != SourceLocal || primary.source != SourceLocal {
		return fmt.Errorf("pgcluster: rebuild standby: only local clusters can be rebuilt, these are %s and %s", c.source, primary.source)
	}
	if c == primary || c.local == primary.local {
		return fmt.Errorf("pgcluster: rebuild standby: a cluster cannot be a standby of itself")
	}
	s := c.local
	if err := s.stop(ctx, "fast", false); err != nil {
		return err
	}
	if !portFree(s.port) {
		return fmt.Errorf("pgcluster: rebuild standby: port %d is taken by another process", s.port)
	}
	data := filepath.Join(s.dir, "data")
	if err := os.RemoveAll(data); err != nil {
		return fmt.Errorf("pgcluster: rebuild standby: remove %s: %w", data, err)
	}
	// Stop removes a temporary directory; make it again.
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: rebuild standby: %w", err)
	}
	if err := s.chown(s.dir); err != nil {
		return err
	}
	if err := s.baseBackup(ctx, primary); err != nil {
		return err
	}
	s.mu.Lock()
	s.settings["hot_standby"] = "on"
	s.mu.Unlock()
	if err := s.startStandby(ctx, true); err != nil {
		return err
	}
	c.logger.Info("pgcluster: rebuilt local standby", slog.String("dir", s.dir), slog.Int("port", s.port), slog.Int("primary_port", primary.local.port))
	return nil
}

// MultiHostURL is a URL of database db that lists every cluster's host and
// port and asks for target_session_attrs=read-write, so libpq and pgx connect
// to whichever of them is the primary, as a relay does across a failover. The
// user and the other query parameters come from the first cluster's URL.
// The clusters' URLs must be in URL form, as a local cluster's always is.
func MultiHostURL(db string, cs ...*Cluster) string {
	if len(cs) == 0 {
		return ""
	}
	u, err := url.Parse(cs[0].baseURL)
	if err != nil {
		return ""
	}
	hosts := make([]string, 0, len(cs))
	for _, c := range cs {
		if h, err := url.Parse(c.baseURL); err == nil && h.Host != "" {
			hosts = append(hosts, h.Host)
		}
	}
	u.Host = strings.Join(hosts, ",")
	u.Path = "/" + db
	q := u.Query()
	q.Set("target_session_attrs", "read-write")
	u.RawQuery = q.Encode()
	return u.String()
}

// baseBackup fills s.dir/data with a pg_basebackup of primary, streamed through
// s's physical replication slot on primary, with standby.signal and
// primary_conninfo written (-R).
func (s *localServer) baseBackup(ctx context.Context, primary *Cluster) error {
	bin := filepath.Join(s.binDir, "pg_basebackup")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("pgcluster: a standby needs pg_basebackup next to postgres: %w", err)
	}
	if err := primary.local.allowReplication(ctx); err != nil {
		return err
	}
	slot := s.slotName()
	// A slot left from an earlier standby of this name would make -C fail; one
	// in use is a running standby, and -C says so.
	if err := dropIdleSlot(ctx, primary.baseURL, slot); err != nil {
		return err
	}
	cmd := s.command(ctx, "pg_basebackup",
		"-D", filepath.Join(s.dir, "data"), "-h", "127.0.0.1", "-p", strconv.Itoa(primary.local.port), "-U", "postgres", "-w",
		"-X", "stream", "-R", "-C", "-S", slot, "--checkpoint=fast", "--no-sync")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: pg_basebackup from port %d into %s: %w: %s", primary.local.port, s.dir, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// startStandby starts s from its base backup and waits until it is in recovery.
func (s *localServer) startStandby(ctx context.Context, configuredPort bool) error {
	if err := s.startOnPort(ctx, configuredPort); err != nil {
		return err
	}
	return waitRecovery(ctx, s.url(), true)
}

// slotName is the physical slot s streams through on its primary: named for
// its directory, so it stays the same across rebuilds and differs between
// servers.
func (s *localServer) slotName() string {
	name := "pgcluster_" + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, filepath.Base(s.dir))
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// replicationHBA lets pg_basebackup and the standby's walreceiver in as
// postgres over 127.0.0.1. initdb's file and harnessHBA both have such a line;
// a kept data directory's edited file may not.
const replicationHBA = "host replication postgres 127.0.0.1/32 trust"

// allowReplication puts replicationHBA first in pg_hba.conf and reloads, unless
// a line already lets postgres replicate from 127.0.0.1 without a password.
func (s *localServer) allowReplication(ctx context.Context) error {
	path := filepath.Join(s.dir, "data", "pg_hba.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pgcluster: read %s: %w", path, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && f[0] == "host" && f[1] == "replication" && (f[2] == "all" || f[2] == "postgres") &&
			f[3] == "127.0.0.1/32" && f[4] == "trust" {
			return nil
		}
	}
	// First, because the first line that matches decides.
	if err := os.WriteFile(path, []byte(replicationHBA+"\n"+string(b)), 0o600); err != nil {
		return fmt.Errorf("pgcluster: write %s: %w", path, err)
	}
	if err := s.chown(path); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, s.url())
	if err != nil {
		return fmt.Errorf("pgcluster: reload pg_hba.conf: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		return fmt.Errorf("pgcluster: reload pg_hba.conf: %w", err)
	}
	return nil
}

func dropIdleSlot(ctx context.Context, dsn, slot string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("pgcluster: drop slot %s: %w", slot, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, slot); err != nil {
		return fmt.Errorf("pgcluster: drop slot %s: %w", slot, err)
	}
	return nil
}

// waitRecovery waits, up to 60s, until the server at dsn answers
// pg_is_in_recovery() with want.
func waitRecovery(ctx context.Context, dsn string, want bool) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		var got bool
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&got)
			conn.Close(context.Background())
		}
		if err == nil && got == want {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("pg_is_in_recovery() = %t", got)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: wait for pg_is_in_recovery() = %t: %w (last: %v)", want, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
