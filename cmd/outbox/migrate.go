package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/outboxrelay/outbox/migrations"
)

// runMigrate: outbox migrate up|down|status|create NAME.
func runMigrate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "migrate")
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	dir := fs.String("dir", "migrations", "source directory for `create` (the repository's migrations folder)")
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: outbox migrate [flags] up | down | down-to VERSION | status | create NAME")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: missing action", errUsage)
	}
	action := fs.Arg(0)
	if action == "create" {
		if fs.NArg() != 2 {
			return fmt.Errorf("%w: outbox migrate create NAME", errUsage)
		}
		return migrations.Create(*dir, fs.Arg(1))
	}
	if err := requireDatabaseURL(*dbURL); err != nil {
		return err
	}
	m, err := migrations.Open(ctx, *dbURL, *schema, e.logger)
	if err != nil {
		return err
	}
	defer m.Close()
	switch action {
	case "up":
		res, err := m.Up(ctx)
		if err != nil {
			return err
		}
		if len(res) == 0 {
			fmt.Fprintf(e.stdout, "schema %s is up to date (version %d)\n", *schema, migrations.Latest())
		}
		for _, r := range res {
			fmt.Fprintf(e.stdout, "applied %s in %s\n", r.Source.Path, r.Duration.Round(1e6))
		}
	case "down":
		r, err := m.Down(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "rolled back %s\n", r.Source.Path)
	case "down-to":
		var v int64
		if _, err := fmt.Sscan(fs.Arg(1), &v); err != nil {
			return fmt.Errorf("%w: down-to VERSION (0 rolls back everything)", errUsage)
		}
		res, err := m.DownTo(ctx, v)
		if err != nil {
			return err
		}
		for _, r := range res {
			fmt.Fprintf(e.stdout, "rolled back %s\n", r.Source.Path)
		}
	case "status":
		st, err := m.Status(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tSTATE\tAPPLIED AT\tFILE")
		for _, s := range st {
			at := "-"
			if !s.AppliedAt.IsZero() {
				at = s.AppliedAt.UTC().Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.Source.Version, s.State, at, s.Source.Path)
		}
		return tw.Flush()
	default:
		fs.Usage()
		return fmt.Errorf("%w: unknown action %q", errUsage, action)
	}
	return nil
}
