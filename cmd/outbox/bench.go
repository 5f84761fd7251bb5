package main

import "github.com/spf13/cobra"

// benchCmd is `outbox bench TARGET`; each target lives in its own
// bench_*.go file.
func benchCmd(e *env) *cobra.Command {
	return groupCmd(e, "bench", "measure the pipeline: relay, writer, side by side with Debezium", benchRelayCmd(e), benchWriterCmd(e), benchCompareCmd(e))
}
