#!/usr/bin/env bash
# Makes sure the tools the tests and the demo need are here: Go, and the
# Postgres server binaries (initdb, postgres, pg_ctl) that the harness runs a
# throwaway cluster from. Installs Postgres with apt-get when it can; otherwise
# fails at once saying exactly what to install.
set -euo pipefail

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not installed. Install Go 1.26 or newer from https://go.dev/dl/ and put it on PATH." >&2
  exit 1
fi

if [[ -n "${OUTBOX_TEST_DATABASE_URL:-}" ]]; then
  exit 0 # tests use the given server
fi

have_pg() {
  if [[ -n "${OUTBOX_PG_BIN:-}" && -x "${OUTBOX_PG_BIN}/initdb" ]]; then return 0; fi
  if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then return 0; fi
  for d in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /opt/homebrew/opt/postgresql@*/bin /usr/local/opt/postgresql@*/bin; do
    if [[ -x "$d/initdb" && -x "$d/postgres" && -x "$d/pg_ctl" ]]; then return 0; fi
  done
  return 1
}

if have_pg; then
  # As root the harness runs the server as the `postgres` OS user.
  if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
    echo "creating the 'postgres' OS user the harness runs the server as (root cannot run initdb)" >&2
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  exit 0
fi

if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "Postgres server binaries not found: installing Debian's postgresql package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  # The package starts its own cluster on 5432; the harness needs only the binaries.
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for v in /etc/postgresql/*/main; do
      [[ -d "$v" ]] && pg_ctlcluster "$(basename "$(dirname "$v")")" main stop >/dev/null 2>&1 || true
    done
  fi
  have_pg && exit 0
fi

cat >&2 <<'MSG'
error: the Postgres server binaries (initdb, postgres, pg_ctl) are not installed.
  Debian/Ubuntu:  sudo apt-get install -y postgresql
  Fedora/RHEL:    sudo dnf install -y postgresql-server
  macOS:          brew install postgresql@16
or point the tests at a running server with wal_level=logical:
  export OUTBOX_TEST_DATABASE_URL=postgres://user:pass@host:5432/postgres
MSG
exit 1
