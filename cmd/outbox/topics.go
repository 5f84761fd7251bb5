package main

import (
	"context"
	"errors"
)

// runTopics is not built yet; its issue replaces this file.
func runTopics(ctx context.Context, e *env, args []string) error {
	return errors.New("topics: not implemented yet")
}
