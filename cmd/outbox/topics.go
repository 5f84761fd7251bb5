package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/ops/topicspec"
)

// topicsCmd is `outbox topics apply|plan -f topics.yaml`: print the diff
// between the file and the cluster, with what topicspec refuses or warns
// about, then (apply) make it.
func topicsCmd(e *env) *cobra.Command {
	apply := &cobra.Command{Use: "apply", Short: "create or update topics from a file, after printing the plan", Args: noArgs}
	af := registerTopicsFlags(apply.Flags())
	dryRun := apply.Flags().Bool("dry-run", false, "print the changes without making them (as topics plan does)")
	apply.RunE = func(c *cobra.Command, _ []string) error {
		return runTopics(c.Context(), e, af, *dryRun)
	}
	plan := &cobra.Command{Use: "plan", Short: "print what topics apply would change, and what it would refuse; change nothing", Args: noArgs}
	pf := registerTopicsFlags(plan.Flags())
	plan.RunE = func(c *cobra.Command, _ []string) error {
		return runTopics(c.Context(), e, pf, true)
	}
	return groupCmd(e, "topics", "create or update topics from a file: apply -f topics.yaml [--dry-run] | plan -f topics.yaml", apply, plan)
}

// topicsFlags are the flags apply and plan share: plan must judge exactly
// what apply would do.
type topicsFlags struct {
	kc               kafkaconn.Config
	file             string
	rf               int
	allowRepartition bool
}

func registerTopicsFlags(fs *pflag.FlagSet) *topicsFlags {
	f := &topicsFlags{}
	f.kc.Register(fs)
	fs.StringVarP(&f.file, "file", "f", "deploy/topics.yaml", "topics file")
	fs.IntVar(&f.rf, "replication-factor", 0, "override every topic's replication factor (e.g. 1 on a single-broker dev cluster; -1 the brokers' default); 0 keeps the file's")
	fs.BoolVar(&f.allowRepartition, "allow-repartition", false, "raise the partition count of keyed topics that hold records, although records of an existing key then go to another partition and lose per-key order across the change")
	return f
}

// runTopics prints the plan and, unless dryRun, applies it. A plan topicspec
// refuses fails the dry run too, so a CI step running plan catches what
// apply would refuse.
func runTopics(ctx context.Context, e *env, f *topicsFlags, dryRun bool) error {
	// Checked before connecting, so a typo fails without a broker.
	if f.rf < topicspec.BrokerDefault {
		return fmt.Errorf("%w: --replication-factor %d: want 1 or more, -1 for the brokers' default, or 0 to keep the file's", errUsage, f.rf)
	}
	file, err := topicspec.Load(f.file)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	specs, err := file.Specs()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	opts, err := f.kc.Opts()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := f.kc.Check(ctx); err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("topics: kafka client: %w", err)
	}
	defer cl.Close()

	plan, err := topicspec.MakePlan(ctx, cl, specs,
		topicspec.AllowRepartition(f.allowRepartition), topicspec.ReplicationFactor(f.rf))
	if errors.Is(err, topicspec.ErrInvalid) {
		return fmt.Errorf("%w: --replication-factor: %v", errUsage, err)
	}
	if err != nil {
		return err
	}
	if err := plan.Write(e.stdout); err != nil {
		return err
	}
	if err := plan.Err(); err != nil {
		if dryRun {
			return fmt.Errorf("dry run: apply would refuse this plan: %w", err)
		}
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
