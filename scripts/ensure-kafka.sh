#!/usr/bin/env bash
# Makes sure what the Apache Kafka test suites need is here: Java 17+ and
# Maven (scripts/kafka.sh fetches the broker's jars from Maven Central with
# them), and kcat (librdkafka), the independent client one test reads with.
# Installs them with apt-get when run as root on Debian/Ubuntu; otherwise
# fails at once saying exactly what to install.
set -euo pipefail

missing=()
java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  [[ "${v%%.*}" -ge 17 ]] 2>/dev/null
}
java_ok || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} for the Apache Kafka test suites (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  java_ok && command -v mvn >/dev/null && command -v kcat >/dev/null && exit 0
fi

cat >&2 <<MSG
error: the Apache Kafka test suites need ${missing[*]}.
  Debian/Ubuntu:  sudo apt-get install -y openjdk-17-jre-headless maven kcat
  Fedora/RHEL:    sudo dnf install -y java-17-openjdk-headless maven kcat
  macOS:          brew install openjdk@17 maven kcat
MSG
exit 1
