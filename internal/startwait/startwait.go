// Package startwait is how a stage waits at start for a server it needs
// (Postgres, Kafka): an outage retries with backoff until ctx ends, anything
// else (a bad URL, bad credentials) ends the wait at once. internal/pgconnect
// and internal/kafkaconn wait through it.
package startwait

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Until calls check until it returns nil, an error that is not transient, or
// ctx ends. what names the server in the log line ("postgres", "kafka") and
// waitFor the wrapped context error ("wait for the server").
func Until(ctx context.Context, logger *slog.Logger, what, waitFor string, transient error, check func(context.Context) error) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := check(ctx)
		switch {
		case ctx.Err() != nil:
			return struct{}{}, backoff.Permanent(ctx.Err())
		case err != nil && !errors.Is(err, transient):
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	},
		backoff.WithBackOff(&backoff.ExponentialBackOff{
			InitialInterval: time.Second,
			Multiplier:      2,
			MaxInterval:     30 * time.Second,
			// Stages of one deployment restarted together after an outage
			// should not retry in step.
			RandomizationFactor: 0.2,
		}),
		backoff.WithMaxElapsedTime(0), // an outage lasts as long as it lasts; ctx bounds the wait
		backoff.WithNotify(func(err error, next time.Duration) {
			logger.WarnContext(ctx, what+": not reachable at start; retrying",
				slog.String("error", err.Error()), slog.Duration("retry_in", next.Round(time.Millisecond)))
		}),
	)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: %s: %w", what, waitFor, err)
	}
	return err
}
