// Package pgcontainer runs a throwaway Postgres in a container through
// testcontainers-go: pgcluster's fallback for a machine with a Docker engine
// but no Postgres server binaries. Only tests import it (internal/testkit/pgtest passes
// Start as pgcluster.Config.Container); the binary must not, because it pulls
// testcontainers-go, the Docker client and testify, and scripts/check-deps.sh
// fails the build when it does.
package pgcontainer

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/outboxrelay/outbox/internal/demo/pgcluster"
)

// Image is the image Start runs.
const Image = "postgres:16-alpine"

// hbaPath is where Start puts a custom pg_hba.conf inside the container.
const hbaPath = "/etc/outbox/pg_hba.conf"

// Start is a pgcluster.ContainerFunc: it starts Image with spec's settings and
// returns a superuser URL and a func that removes the container. It returns an
// error wrapping pgcluster.ErrNoEngine when no Docker engine answers within 3s.
func Start(ctx context.Context, spec pgcluster.Spec) (string, func(context.Context) error, error) {
	if err := engineAnswers(ctx); err != nil {
		return "", nil, fmt.Errorf("%w: %v", pgcluster.ErrNoEngine, err)
	}
	settings := make(map[string]string, len(spec.Settings)+1)
	for k, v := range spec.Settings {
		settings[k] = v
	}
	opts := []testcontainers.ContainerCustomizer{
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.WithDatabase("postgres"),
	}
	if len(spec.HBA) > 0 {
		// The harness reaches the container from outside with the password;
		// the image's init scripts use the socket.
		lines := append([]string{
			"local all postgres trust",
			"host all postgres all scram-sha-256",
			"host replication postgres all scram-sha-256",
		}, spec.HBA...)
		opts = append(opts, testcontainers.WithFiles(testcontainers.ContainerFile{
			Reader:            strings.NewReader(strings.Join(lines, "\n") + "\n"),
			ContainerFilePath: hbaPath,
			FileMode:          0o644,
		}))
		settings["hba_file"] = hbaPath
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	cmd := []string{"postgres"}
	for _, k := range keys {
		cmd = append(cmd, "-c", k+"="+settings[k])
	}
	opts = append(opts,
		testcontainers.WithCmd(cmd...),
		testcontainers.WithWaitStrategy(wait.ForLog("database system is ready to accept connections").WithOccurrence(2).WithStartupTimeout(60*time.Second)),
	)
	ctr, err := tcpostgres.Run(ctx, Image, opts...)
	if err != nil {
		return "", nil, fmt.Errorf("pgcontainer: start %s: %w", Image, err)
	}
	url, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = ctr.Terminate(context.Background())
		return "", nil, fmt.Errorf("pgcontainer: url: %w", err)
	}
	return url, func(ctx context.Context) error { return ctr.Terminate(ctx) }, nil
}

// engineAnswers returns nil when a Docker engine is reachable. A machine with
// only the docker client (no engine) fails quickly.
func engineAnswers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer provider.Close()
	return provider.Health(ctx)
}
