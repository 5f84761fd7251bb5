#!/usr/bin/env bash
# Makes sure the schema registry tests can start their registry: Java 17+
# and Maven (scripts/registry.sh fetches Apicurio Registry from Maven Central
# with them), then fetches the registry into its cache under
# ~/.cache/outbox once, so parallel test binaries only start it. Installs
# Java and Maven with apt-get when run as root on Debian/Ubuntu; otherwise
# fails at once saying exactly what to install.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

missing=()
java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  [[ "${v%%.*}" -ge 17 ]] 2>/dev/null
}
java_ok || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v curl >/dev/null 2>&1 || missing+=(curl)

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} for the schema registry tests (Debian packages)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
  if ! java_ok || ! command -v mvn >/dev/null || ! command -v curl >/dev/null; then
    cat >&2 <<MSG
error: the schema registry tests need ${missing[*]}.
  Debian/Ubuntu:  sudo apt-get install -y openjdk-17-jre-headless maven curl
  Fedora/RHEL:    sudo dnf install -y java-17-openjdk-headless maven curl
  macOS:          brew install openjdk@17 maven curl
MSG
    exit 1
  fi
fi

bash "$here/registry.sh" dist >/dev/null
