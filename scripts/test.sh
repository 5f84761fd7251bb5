#!/usr/bin/env bash
# The project's test command (README, `make test`, .ci/run): checks that the
# generated code is current and the code is formatted and vetted, then runs
# every test with the race detector against a real Postgres.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-postgres.sh

echo "== verify: gofmt, go vet, sqlc, go.mod"
unformatted="$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"
if [[ -n "$unformatted" ]]; then
  echo "gofmt wants to change:" >&2; echo "$unformatted" >&2; exit 1
fi
go vet ./...
# sqlc diff exits non-zero when sql/ differs from what queries/ and migrations/ generate.
go tool sqlc diff
go mod verify >/dev/null

echo "== lint: staticcheck"
go tool staticcheck ./...

echo "== test (race detector on)"
go test -race -count=1 -timeout 25m ${OUTBOX_TEST_FLAGS:-} ./...
