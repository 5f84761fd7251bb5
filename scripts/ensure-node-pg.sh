#!/usr/bin/env bash
# Installs node-postgres (npm package pg, pinned) once into a cache folder for
# the tests that write to the outbox from Node (outbox/sqlwriter_test.go runs
# the Node example of docs/writer.md with it). Prints the node_modules folder
# to put in NODE_PATH. Without node or npm it installs Debian's nodejs and npm
# packages when it runs as root with apt-get (as ensure-postgres.sh does for
# the server), and otherwise fails at once saying what to install. Safe to run
# again and from parallel test binaries: the second run only prints the folder.
#
# OUTBOX_NODE_PG_DIR overrides the cache folder (~/.cache/outbox/node-pg).
set -euo pipefail

version=8.23.1
dir="${OUTBOX_NODE_PG_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox/node-pg}"

have_node() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }

if ! have_node && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "node and npm not found: installing Debian's nodejs and npm packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq nodejs npm >&2
fi

if ! have_node; then
  cat >&2 <<'MSG'
error: Node.js and npm are needed to run the Node example of docs/writer.md.
  Debian/Ubuntu:  sudo apt-get install -y nodejs npm
  Fedora/RHEL:    sudo dnf install -y nodejs npm
  macOS:          brew install node
or install Node.js 18 or newer from https://nodejs.org/ and put node and npm on PATH.
MSG
  exit 1
fi

installed() {
  [[ -f "$dir/node_modules/pg/package.json" ]] &&
    node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
      "$dir/node_modules/pg/package.json" "$version"
}

if ! installed; then
  mkdir -p "$dir"
  # Parallel test binaries may get here together: one installs, the others wait.
  exec 9>"$dir/.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if ! installed; then
    echo "installing node-postgres pg@$version into $dir" >&2
    if ! npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "pg@$version" >&2; then
      echo "error: npm install pg@$version failed; check that the npm registry is reachable (npm config get registry)" >&2
      exit 1
    fi
  fi
fi
echo "$dir/node_modules"
