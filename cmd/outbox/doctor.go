package main

import (
	"context"
	"fmt"

	"github.com/outboxrelay/outbox/internal/doctor"
)

// runDoctor prints every readiness check with its fix; it exits 1 when any
// check failed, so it can gate a deploy.
func runDoctor(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "doctor")
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	pub := fs.String("publication", envOr("OUTBOX_PUBLICATION", ""), "publication the relay reads (env OUTBOX_PUBLICATION); defaults to <schema>_events")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := requireDatabaseURL(*dbURL); err != nil {
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
