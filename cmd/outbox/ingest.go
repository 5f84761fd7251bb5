package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/ingest"
	"github.com/outboxrelay/outbox/internal/opsserver"
	"github.com/outboxrelay/outbox/internal/pgconnect"
)

// ingestCmd is `outbox ingest`: it reads the sources from --config (secrets
// from the environment variables the file names), serves POST
// /webhooks/{source} on --listen, and on SIGTERM finishes the deliveries
// under way, bounded by --shutdown-timeout.
func ingestCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "ingest", Short: "receive webhooks, verify and deduplicate them, write them into the outbox in version order", Args: noArgs}
	fs := c.Flags()
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	var (
		configFile  = fs.String("config", "", "sources file, YAML or JSON (docs/ingest.md); secrets come from the variables it names; required")
		listen      = fs.String("listen", ":8081", "serve POST /webhooks/{source} on this address")
		shutdown    = fs.Duration("shutdown-timeout", 10*time.Second, "bound on finishing the deliveries under way at shutdown")
		metricsAddr = metricsAddrFlag(fs)
		check       = checkFlag(fs)
	)
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if err := requireDatabaseURL(*dbURL); err != nil {
			return err
		}
		if *configFile == "" {
			return fmt.Errorf("%w: --config is required", errUsage)
		}
		raw, err := os.ReadFile(*configFile)
		if err != nil {
			return fmt.Errorf("%w: --config: %v", errUsage, err)
		}
		cfg, err := ingest.ParseConfig(raw, os.LookupEnv)
		if err != nil {
			return fmt.Errorf("%w: --config %s: %v", errUsage, *configFile, err)
		}
		pcfg, err := pgxpool.ParseConfig(*dbURL)
		if err != nil {
			return fmt.Errorf("%w: --database-url: %s", errUsage, strings.ReplaceAll(err.Error(), *dbURL, pgconnect.Redact(*dbURL)))
		}
		// The pool connects on first use, so --check needs no database.
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return fmt.Errorf("ingest: postgres pool: %w", err)
		}
		defer pool.Close()
		reg := opsserver.NewRegistry()
		cfg.Pool, cfg.Schema, cfg.Logger, cfg.Registerer = pool, *schema, e.logger, reg
		h, err := ingest.New(cfg)
		if err != nil {
			if errors.Is(err, ingest.ErrConfig) {
				return fmt.Errorf("%w: --config %s: %v", errUsage, *configFile, err)
			}
			return err
		}
		if *check {
			return printEffective(e.stdout, c, e.sources)
		}
		if err := checkPostgres(ctx, *dbURL); err != nil {
			return err
		}
		// Without webhook_entities every delivery would be a 503: say so now.
		if err := h.Ready(); err != nil {
			return err
		}
		names := make([]string, 0, len(cfg.Sources))
		for _, s := range cfg.Sources {
			names = append(names, s.Name+" ("+string(s.Preset)+")")
		}
		stopped := e.starting(ctx, c, "database", pgconnect.Redact(*dbURL), "schema", *schema, "listen", *listen, "sources", names)
		stopOps, err := serveOps(e, *metricsAddr, reg, h.Ready)
		if err != nil {
			return err
		}
		defer stopOps()
		srv := ingest.NewServer(*listen, h)
		if err := srv.Start(ctx); err != nil {
			return stopped(ctx, err)
		}
		e.logger.InfoContext(ctx, "ingest: serving POST /webhooks/{source}", "addr", srv.Addr())
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), *shutdown)
		defer cancel()
		if err := srv.Stop(sctx); err != nil {
			return stopped(ctx, fmt.Errorf("ingest: stop within --shutdown-timeout %s: %w", *shutdown, err))
		}
		return stopped(ctx, ctx.Err())
	}
	return c
}
