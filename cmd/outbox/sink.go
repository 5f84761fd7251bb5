package main

import (
	"context"
	"errors"
)

// runSink is not built yet; its issue replaces this file.
func runSink(ctx context.Context, e *env, args []string) error {
	return errors.New("sink: not implemented yet")
}
