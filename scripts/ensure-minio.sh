#!/usr/bin/env bash
# Installs the MinIO server (a real S3-compatible server) once into a cache
# folder for the claim-check S3 store's tests (claimcheck/s3store), building
# it from the Go module proxy with `go install`, and prints the binary's path.
# The build takes about 7 minutes on a 2-core machine the first time; later
# runs only print the path. Safe to run from parallel test binaries.
#
# MinIO publishes no semver tags, so the version is a pinned pseudo-version
# of github.com/minio/minio. The server is for tests only: it is run on
# loopback by the tests and never linked into the outbox binary.
#
# OUTBOX_MINIO_DIR overrides the cache folder (~/.cache/outbox/minio).
set -euo pipefail

version=v0.0.0-20260212201848-7aac2a2c5b7c
dir="${OUTBOX_MINIO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox/minio}"
bin="$dir/bin/minio"
stamp="$dir/bin/minio.version"

installed() { [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; }

if ! installed; then
  if ! command -v go >/dev/null 2>&1; then
    echo "error: go is needed to build the MinIO server for the S3 tests; install Go 1.26+ and run: GOBIN=$dir/bin go install github.com/minio/minio@$version" >&2
    exit 1
  fi
  mkdir -p "$dir/bin"
  exec 9>"$dir/.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if ! installed; then
    echo "building MinIO server github.com/minio/minio@$version into $dir/bin (about 7 minutes on 2 cores)" >&2
    # Outside any module, so the project's go.mod is not touched.
    if ! (cd "$dir" && GOBIN="$dir/bin" GOFLAGS=-mod=mod GOWORK=off go install "github.com/minio/minio@$version" >&2); then
      echo "error: go install github.com/minio/minio@$version failed; check that the Go module proxy is reachable (go env GOPROXY)" >&2
      exit 1
    fi
    echo "$version" >"$stamp"
  fi
fi
echo "$bin"
