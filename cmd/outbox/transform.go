package main

import (
	"context"
	"errors"
)

// runTransform is not built yet; its issue replaces this file.
func runTransform(ctx context.Context, e *env, args []string) error {
	return errors.New("transform: not implemented yet")
}
