package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/ops/lagcheck"
	"github.com/outboxrelay/outbox/internal/opsserver"
)

// exitLagAlert is lag's exit code when a group breaches --fail-on or a threshold.
const exitLagAlert = 3

// lagCmd is `outbox lag`: consumer lag per group and partition, in records and
// seconds, with Burrow statuses; exit 3 on an alert, 1 when a named group does
// not exist; --watch and --metrics-addr keep sampling and serve the figures as
// gauges.
func lagCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "lag", Short: "consumer lag per group and partition, in records and seconds", Args: noArgs}
	fs := c.Flags()
	var kc kafkaconn.Config
	kc.Register(fs)
	groups := splitList("")
	fromEnv := true
	fs.Func("group", "consumer group to check; repeat or comma separate; default all groups", func(s string) error {
		if fromEnv {
			groups, fromEnv = nil, false
		}
		groups = append(groups, splitList(s)...)
		return nil
	})
	window := fs.Int("window", 3, "samples per partition that the status judges (Burrow's window); 1 gives an instant snapshot")
	interval := fs.Duration("interval", 5*time.Second, "time between samples")
	watch := fs.Bool("watch", false, "keep sampling and printing every --interval until interrupted")
	metricsAddr := fs.String("metrics-addr", "", "serve the figures on /metrics at this address (implies --watch)")
	maxRecords := fs.Int64("max-lag-records", 0, "alert when a group's lag exceeds this many records (0: off)")
	maxAge := fs.Duration("max-lag-seconds", 0, "alert when a group's oldest unconsumed record is older than this, e.g. 5m (0: off)")
	failOn := fs.String("fail-on", "ERR", "alert on a group status at or above WARN or ERR; none to alert on thresholds only")
	probe := fs.Duration("probe-timeout", 2*time.Second, "how long to look for the oldest unconsumed record of a lagging partition")
	asJSON := fs.Bool("json", false, "print reports as JSON lines")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		severity := map[string]int{"WARN": 1, "ERR": 2, "NONE": 99}[strings.ToUpper(*failOn)]
		if severity == 0 {
			return fmt.Errorf("%w: --fail-on is WARN, ERR or none", errUsage)
		}
		if *window < 1 || *interval <= 0 {
			return fmt.Errorf("%w: --window must be at least 1 and --interval positive", errUsage)
		}
		opts, err := kc.Opts()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		// A one-shot lag fails at once on any connection problem; a watching
		// one, like a stage, waits out an outage at start.
		if *watch || *metricsAddr != "" {
			err = kc.Wait(ctx, e.logger)
		} else {
			err = kc.Check(ctx)
		}
		if err != nil {
			return err
		}
		checker, err := lagcheck.New(lagcheck.Config{Groups: groups, Window: *window, ProbeTimeout: *probe}, opts...)
		if err != nil {
			return err
		}
		defer checker.Close()
		show := func(r lagcheck.Report) error {
			if *asJSON {
				return writeLagJSON(e.stdout, r)
			}
			return writeLagTable(e.stdout, r)
		}

		if *watch || *metricsAddr != "" {
			reg := opsserver.NewRegistry()
			metrics, err := lagcheck.NewMetrics(reg)
			if err != nil {
				return err
			}
			stopOps, err := serveOps(e, *metricsAddr, reg, nil)
			if err != nil {
				return err
			}
			defer stopOps()
			t := time.NewTicker(*interval)
			defer t.Stop()
			for {
				r, err := checker.Sample(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					e.logger.ErrorContext(ctx, "lag: sample failed", "err", err)
				} else {
					metrics.Observe(r)
					if err := show(r); err != nil {
						return err
					}
					if len(r.Missing) > 0 {
						e.logger.WarnContext(ctx, "lag: groups not found", "groups", strings.Join(r.Missing, ","))
					}
					if msg := lagAlert(r, severity, *maxRecords, *maxAge); msg != "" {
						e.logger.WarnContext(ctx, "lag: alert", "reason", msg)
					}
				}
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		}

		var r lagcheck.Report
		for i := range *window {
			if i > 0 {
				select {
				case <-ctx.Done():
					return fmt.Errorf("lag: %w", ctx.Err())
				case <-time.After(*interval):
				}
			}
			if r, err = checker.Sample(ctx); err != nil {
				return err
			}
		}
		if err := show(r); err != nil {
			return err
		}
		// A named group that does not exist cannot be judged: exit 1 rather
		// than 0, so a typo in a cron check's --group does not pass forever.
		if len(r.Missing) > 0 {
			return exitError{code: 1, msg: missingGroups(r.Missing)}
		}
		if msg := lagAlert(r, severity, *maxRecords, *maxAge); msg != "" {
			return exitError{code: exitLagAlert, msg: msg}
		}
		return nil
	}
	return c
}

// lagAlert returns why the report breaches the alert settings, or "".
func lagAlert(r lagcheck.Report, severity int, maxRecords int64, maxAge time.Duration) string {
	var why []string
	for _, g := range r.Groups {
		if g.Status.Severity() >= severity {
			why = append(why, fmt.Sprintf("group %s is %s (%s)", g.Group, g.Status, g.Worst))
		}
		if maxRecords > 0 && g.Lag > maxRecords {
			why = append(why, fmt.Sprintf("group %s lags %d records (max %d)", g.Group, g.Lag, maxRecords))
		}
		if maxAge > 0 && g.MaxLagSeconds > maxAge.Seconds() {
			why = append(why, fmt.Sprintf("group %s lags %.0fs (max %s)", g.Group, g.MaxLagSeconds, maxAge))
		}
	}
	return strings.Join(why, "; ")
}

// missingGroups says which named groups the cluster does not know, and why
// that may be.
func missingGroups(names []string) string {
	return fmt.Sprintf("no consumer group named %s on the cluster (no member, no committed offset): a wrong --group, or its stage has not committed yet; without --group every group is checked",
		strings.Join(names, ", "))
}

// noGroups is the line for a cluster with no consumer group at all.
const noGroups = "no consumer group on the cluster: no stage has joined a group or committed an offset yet (or --brokers names another cluster); pass --group NAME to check a stage's group by name"

func writeLagTable(w io.Writer, r lagcheck.Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "# %s\n", r.At.UTC().Format(time.RFC3339))
	// A header over no rows reads as "every group is fine".
	switch {
	case len(r.Groups) == 0 && len(r.Missing) == 0:
		fmt.Fprintln(tw, noGroups)
	case len(r.Missing) > 0:
		fmt.Fprintln(tw, missingGroups(r.Missing))
	}
	if len(r.Groups) > 0 {
		fmt.Fprintln(tw, "GROUP\tSTATUS\tSTATE\tMEMBERS\tTOPIC\tPARTITION\tCOMMITTED\tLSO\tHWM\tLAG\tLAG_SECONDS\tPARTITION_STATUS")
	}
	for _, g := range r.Groups {
		status := g.Status.String()
		if g.Status == lagcheck.StatusErr {
			status += "(" + g.Worst.String() + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t\t\t\t\t\t%d\t%.1f\t\n", g.Group, status, g.State, g.Members, g.Lag, g.MaxLagSeconds)
		for _, p := range g.Partitions {
			fmt.Fprintf(tw, "\t\t\t\t%s\t%d\t%d\t%d\t%d\t%d\t%.1f\t%s\n", p.Topic, p.Partition, p.Committed, p.End, p.HighWatermark, p.Lag, p.LagSeconds, p.Status)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("lag: write: %w", err)
	}
	return nil
}

func writeLagJSON(w io.Writer, r lagcheck.Report) error {
	if err := json.NewEncoder(w).Encode(lagcheck.NewView(r)); err != nil {
		return fmt.Errorf("lag: write: %w", err)
	}
	return nil
}
