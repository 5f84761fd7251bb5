package main

import (
	"context"
	"errors"
)

// runLag is not built yet; its issue replaces this file.
func runLag(ctx context.Context, e *env, args []string) error {
	return errors.New("lag: not implemented yet")
}
