package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/ops/doctor"
)

// runDoctor prints every readiness check with its fix; it exits 1 when any
// check failed, so it can gate a deploy.
func doctorCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "doctor", Short: "check that Postgres is ready for the relay and say what to fix", Args: noArgs}
	fs := c.Flags()
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	pub := fs.String("publication", "", "publication the relay reads; defaults to <schema>_events")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if err := requireDatabaseURL(*dbURL); err != nil {
			return err
		}
		if err := checkPostgres(c.Context(), *dbURL); err != nil {
			return err
		}
		r, err := doctor.Run(ctx, *dbURL, doctor.Options{Schema: *schema, Publication: *pub})
		if err != nil {
			return err
		}
		fmt.Fprint(e.stdout, r.String())
		if r.Failed() {
			return exitError{code: 1, msg: "some checks failed; see the fixes above"}
		}
		fmt.Fprintln(e.stdout, "all checks passed")
		return nil
	}
	return c
}
