package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/migrations"
)

// migrateCmd is `outbox migrate up|down|down-to VERSION|status|create NAME`.
// Each action names the database and schema it acts on before it acts.
func migrateCmd(e *env) *cobra.Command {
	var byDBA bool
	withDB := func(c *cobra.Command, fn func(ctx context.Context, m *migrations.Migrator, schema string, args []string) error) *cobra.Command {
		fs := c.Flags()
		dbURL := databaseURLFlag(fs)
		schema := schemaFlag(fs)
		if c.Name() == "up" {
			fs.BoolVar(&byDBA, "publication-by-dba", false, "leave the publication to the DBA when this role has no CREATE on the database; prints the statement the DBA runs (see docs/operations.md)")
		}
		c.RunE = func(c *cobra.Command, args []string) error {
			if err := requireDatabaseURL(*dbURL); err != nil {
				return err
			}
			ctx := c.Context()
			if err := checkPostgres(ctx, *dbURL); err != nil {
				return err
			}
			actsOn(e, c.CommandPath(), *dbURL, *schema)
			m, err := migrations.OpenWithOptions(ctx, *dbURL, migrations.Options{Schema: *schema, Logger: e.logger, PublicationByDBA: byDBA})
			if err != nil {
				return err
			}
			defer m.Close()
			return fn(ctx, m, *schema, args)
		}
		return c
	}
	up := withDB(&cobra.Command{Use: "up", Short: "apply every pending migration", Args: noArgs},
		func(ctx context.Context, m *migrations.Migrator, schema string, _ []string) error {
			res, err := m.Up(ctx)
			if err != nil {
				return err
			}
			if len(res) == 0 {
				fmt.Fprintf(e.stdout, "schema %s is up to date (version %d)\n", schema, migrations.Latest())
			}
			for _, r := range res {
				fmt.Fprintf(e.stdout, "applied %s in %s\n", r.Source.Path, r.Duration.Round(1e6))
			}
			stmt, err := m.PublicationForDBA(ctx)
			if err != nil {
				return err
			}
			if stmt != "" {
				fmt.Fprintf(e.stdout, "publication %s is left to the DBA (this role has no CREATE on the database); the DBA runs:\n  %s\n", migrations.PublicationName(schema), stmt)
			}
			return nil
		})
	down := withDB(&cobra.Command{Use: "down", Short: "roll back the latest applied migration", Args: noArgs},
		func(ctx context.Context, m *migrations.Migrator, _ string, _ []string) error {
			r, err := m.Down(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "rolled back %s\n", r.Source.Path)
			return nil
		})
	downTo := withDB(&cobra.Command{Use: "down-to VERSION", Short: "roll back to VERSION (0 rolls back everything)", Args: exactArgs(1, "VERSION")},
		func(ctx context.Context, m *migrations.Migrator, _ string, args []string) error {
			var v int64
			if _, err := fmt.Sscan(args[0], &v); err != nil {
				return fmt.Errorf("%w: down-to VERSION: %q is not a number (0 rolls back everything)", errUsage, args[0])
			}
			res, err := m.DownTo(ctx, v)
			if err != nil {
				return err
			}
			for _, r := range res {
				fmt.Fprintf(e.stdout, "rolled back %s\n", r.Source.Path)
			}
			return nil
		})
	status := withDB(&cobra.Command{Use: "status", Short: "list the migrations and whether each is applied", Args: noArgs},
		func(ctx context.Context, m *migrations.Migrator, _ string, _ []string) error {
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
		})
	create := &cobra.Command{Use: "create NAME", Short: "write a new, empty migration file into --dir", Args: exactArgs(1, "NAME")}
	dir := create.Flags().String("dir", "migrations", "source directory (the repository's migrations folder)")
	create.RunE = func(c *cobra.Command, args []string) error {
		return migrations.Create(*dir, args[0])
	}
	return groupCmd(e, "migrate", "run the embedded schema migrations: up | down | down-to VERSION | status | create NAME",
		up, down, downTo, status, create)
}
