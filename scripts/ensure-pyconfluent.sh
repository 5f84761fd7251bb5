#!/usr/bin/env bash
# Installs Confluent's Python client (confluent-kafka, with librdkafka and
# the Schema Registry deserializers, pinned in scripts/confluent/
# requirements.txt) into a virtualenv of its own, once, and prints the
# virtualenv's python. The test of the Confluent wire format reads the
# relay's records with it: Confluent's AvroDeserializer and JSONDeserializer
# are an independent decoder of the same format KafkaAvroDeserializer reads
# in Java (Confluent's Java jars are not on Maven Central). Safe to run from
# parallel test binaries.
#
# OUTBOX_PYCONFLUENT_DIR overrides the folder (~/.cache/outbox/pyconfluent).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/confluent/requirements.txt"
dir="${OUTBOX_PYCONFLUENT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox/pyconfluent}"
py="$dir/bin/python"
stamp="$dir/requirements.txt"

installed() { [[ -x "$py" && -f "$stamp" ]] && cmp -s "$stamp" "$req"; }

if ! installed; then
  if ! command -v python3 >/dev/null 2>&1; then
    echo "error: python3 (3.9+, with venv) is needed for the Confluent wire-format test; install it (Debian: apt-get install -y python3 python3-venv)" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$dir")"
  exec 9>"$dir.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if ! installed; then
    echo "installing confluent-kafka into $dir from PyPI" >&2
    rm -rf "$dir"
    if ! python3 -m venv "$dir" >&2; then
      echo "error: python3 -m venv failed; install the venv module (Debian: apt-get install -y python3-venv)" >&2
      exit 1
    fi
    if ! "$py" -m pip install --quiet --disable-pip-version-check -r "$req" >&2; then
      echo "error: pip install -r $req failed; check that PyPI is reachable (pip config list)" >&2
      exit 1
    fi
    cp "$req" "$stamp"
  fi
fi
echo "$py"
