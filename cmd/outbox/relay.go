package main

import (
	"context"
	"errors"
)

// runRelay is not built yet; its issue replaces this file.
func runRelay(ctx context.Context, e *env, args []string) error {
	return errors.New("relay: not implemented yet")
}
