package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/outbox"
)

// runMaintain creates upcoming partitions, drops expired days and deletes
// expired idempotency keys. Run it daily (cron, a Kubernetes CronJob) or use
// pg_cron with `SELECT outbox.maintain('7 days', 3)`.
func maintainCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "maintain", Short: "create upcoming day partitions, drop expired ones, delete expired idempotency keys", Args: noArgs}
	fs := c.Flags()
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	retention := fs.Duration("retention", 7*24*time.Hour, "keep events this long; older day partitions are dropped")
	premake := fs.Int("premake", 3, "day partitions to keep ready ahead")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if err := requireDatabaseURL(*dbURL); err != nil {
			return err
		}
		if err := checkPostgres(ctx, *dbURL); err != nil {
			return err
		}
		actsOn(e, c.CommandPath(), *dbURL, *schema)
		w, err := outbox.New(outbox.Config{Schema: *schema})
		if err != nil {
			return err
		}
		conn, err := pgx.Connect(ctx, *dbURL)
		if err != nil {
			return fmt.Errorf("maintain: connect: %w", err)
		}
		defer conn.Close(context.Background())
		actions, err := w.Maintain(ctx, conn, outbox.MaintainOptions{Retention: *retention, Premake: *premake})
		if err != nil {
			return err
		}
		if len(actions) == 0 {
			fmt.Fprintln(e.stdout, "nothing to do")
		}
		for _, a := range actions {
			fmt.Fprintf(e.stdout, "%s %s\n", a.Action, a.Object)
		}
		return nil
	}
	return c
}
