package main

import (
	"context"
	"errors"
)

func runMaintain(ctx context.Context, e *env, args []string) error {
	return errors.New("maintain: not implemented yet")
}
