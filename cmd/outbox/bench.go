package main

import (
	"context"
	"fmt"
)

// benches are the `outbox bench` targets; each lives in its own bench_*.go file.
var benches = map[string]func(ctx context.Context, e *env, args []string) error{}

func runBench(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || benches[args[0]] == nil {
		names := ""
		for n := range benches {
			names += " " + n
		}
		if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintf(e.stdout, "usage: outbox bench TARGET [flags]; targets:%s; `outbox bench TARGET -h` for its flags\n", names)
			return nil
		}
		return fmt.Errorf("%w: outbox bench TARGET [flags]; targets:%s", errUsage, names)
	}
	return benches[args[0]](ctx, e, args[1:])
}
