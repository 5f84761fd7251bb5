package main

import (
	"errors"
	"flag"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
)

// TEMPORARY while demo and bench move to packages: they parse their own flags.
func newFlagSet(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("outbox "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

func demoCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "demo", Short: "run the whole pipeline on a throwaway Postgres and an embedded Kafka", DisableFlagParsing: true,
		RunE: func(c *cobra.Command, args []string) error { return helpOK(runDemo(c.Context(), e, args)) }}
}

func benchCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "bench", Short: "measure the pipeline: bench relay | bench writer", DisableFlagParsing: true,
		RunE: func(c *cobra.Command, args []string) error { return helpOK(runBench(c.Context(), e, args)) }}
}

func helpOK(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// registerKafkaStd adds the Kafka connection flags to a standard flag set
// (TEMPORARY, for demo and bench until they move to cobra).
func registerKafkaStd(fs *flag.FlagSet, kc *kafkaconn.Config) {
	pfs := pflag.NewFlagSet("kafka", pflag.ContinueOnError)
	kc.Register(pfs)
	pfs.VisitAll(func(f *pflag.Flag) { fs.Var(f.Value, f.Name, f.Usage) })
}
