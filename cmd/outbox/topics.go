package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/topicspec"
)

// topicsCmd is `outbox topics apply -f topics.yaml [--dry-run]`: print the
// diff between the file and the cluster, then apply it.
func topicsCmd(e *env) *cobra.Command {
	apply := &cobra.Command{Use: "apply", Short: "create or update topics from a file, after printing the plan", Args: noArgs}
	fs := apply.Flags()
	var kc kafkaconn.Config
	kc.Register(fs)
	file := fs.StringP("file", "f", "deploy/topics.yaml", "topics file")
	dryRun := fs.Bool("dry-run", false, "print the changes without making them")
	rf := fs.Int("replication-factor", 0, "override every topic's replication factor (e.g. 1 on a single-broker dev cluster); 0 keeps the file's")
	apply.RunE = func(c *cobra.Command, _ []string) error {
		return runTopicsApply(c.Context(), e, kc, *file, *dryRun, *rf)
	}
	return groupCmd(e, "topics", "create or update topics from a file: apply -f topics.yaml [--dry-run]", apply)
}

func runTopicsApply(ctx context.Context, e *env, kc kafkaconn.Config, file string, dryRun bool, rf int) error {
	f, err := topicspec.Load(file)
	if err != nil {
		return err
	}
	specs, err := f.Specs()
	if err != nil {
		return err
	}
	if rf != 0 {
		for i := range specs {
			specs[i].ReplicationFactor = int16(rf)
			// min.insync.replicas above the replica count would reject every
			// acks=all write (and transactional producers use acks=all).
			if m, err := strconv.Atoi(specs[i].Configs["min.insync.replicas"]); err == nil && rf > 0 && m > rf {
				specs[i].Configs["min.insync.replicas"] = strconv.Itoa(rf)
			}
		}
	}
	opts, err := kc.Opts()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := kc.Check(ctx); err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("topics: kafka client: %w", err)
	}
	defer cl.Close()

	plan, err := topicspec.MakePlan(ctx, cl, specs)
	if err != nil {
		return err
	}
	if err := plan.Write(e.stdout); err != nil {
		return err
	}
	if dryRun || plan.Pending() == 0 {
		return nil
	}
	if err := topicspec.Apply(ctx, cl, plan); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "applied %d change(s)\n", plan.Pending())
	return nil
}
