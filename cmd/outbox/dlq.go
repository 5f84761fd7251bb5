package main

import (
	"context"
	"errors"
)

// runDLQ is not built yet; its issue replaces this file.
func runDLQ(ctx context.Context, e *env, args []string) error {
	return errors.New("dlq: not implemented yet")
}
