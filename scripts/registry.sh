#!/usr/bin/env bash
# Runs a real Confluent-compatible schema registry on 127.0.0.1: Apicurio
# Registry (in-memory storage, its Confluent API at /apis/ccompat/v7) from
# Maven Central, for the tests that compare `outbox schema check` with a
# registry's own verdicts. No Docker, no downloads besides Maven Central.
#
#   scripts/registry.sh start DIR     start (or find running) the registry of DIR; prints its URL
#   scripts/registry.sh stop DIR
#   scripts/registry.sh status DIR
#   scripts/registry.sh dist          fetch the distribution, print its folder
#
# start fetches io.apicurio:apicurio-registry-app:VERSION:tar.gz:all once
# into a cache outside the tree ($OUTBOX_REGISTRY_CACHE, default
# ~/.cache/outbox/apicurio-registry-VERSION), unpacks it there, and starts
# the registry on a free port with DIR holding its pid, port and log. Its
# last line is the Confluent-compatible base URL,
# http://127.0.0.1:PORT/apis/ccompat/v7; on a running DIR it prints the same
# URL and changes nothing. Storage is in memory: a stopped registry forgets
# every subject.
#
# Version 3.0.9 is the newest that runs on Java 17 (3.1 and later need Java
# 21), the JRE the Kafka suites already use.
#
# Environment: OUTBOX_REGISTRY_HEAP (default -Xmx256m -Xms64m),
# OUTBOX_REGISTRY_START_TIMEOUT (seconds, default 60), OUTBOX_REGISTRY_WATCH_PID
# (stop the registry when that process exits: a killed test binary leaves no
# registry behind).
set -euo pipefail

version=3.0.9
artifact="io.apicurio:apicurio-registry-app:$version:tar.gz:all"

die() { echo "registry.sh: $*" >&2; exit 1; }

usage() {
  sed -n '7,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need_java() {
  command -v java >/dev/null 2>&1 ||
    die "Java 17 or newer is not installed: apt-get install -y openjdk-17-jre-headless (or set PATH to a JDK 17+)"
  local v
  v="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  [[ "${v%%.*}" -ge 17 ]] 2>/dev/null || die "Java $v is too old for Apicurio Registry $version: install Java 17 or newer (apt-get install -y openjdk-17-jre-headless)"
}

# dist fetches and unpacks the distribution into the cache once and prints
# the folder. A lock keeps parallel test binaries from fetching twice.
dist() {
  local cache="${OUTBOX_REGISTRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox/apicurio-registry-$version}"
  if [[ -f "$cache/.complete" && -f "$cache/.cds-tried" ]]; then echo "$cache"; return; fi
  mkdir -p "$cache"
  (
    flock 9
    if [[ -f "$cache/.complete" && ! -f "$cache/.cds-tried" ]]; then
      train_cds "$cache"
      touch "$cache/.cds-tried"
    fi
    if [[ ! -f "$cache/.complete" ]]; then
      command -v mvn >/dev/null 2>&1 ||
        die "Maven is not installed and Apicurio Registry $version is not cached in $cache: apt-get install -y maven"
      echo "registry.sh: fetching Apicurio Registry $version from Maven Central into $cache" >&2
      rm -rf "$cache/dl" "$cache/app"
      (cd "$cache" && mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="$artifact" -DoutputDirectory="$cache/dl" >&2) ||
        die "mvn could not fetch $artifact (is Maven Central reachable?)"
      mkdir -p "$cache/app"
      tar -xzf "$cache/dl/apicurio-registry-app-$version-all.tar.gz" -C "$cache/app" ||
        die "could not unpack $cache/dl/apicurio-registry-app-$version-all.tar.gz"
      rm -rf "$cache/dl"
      [[ -f "$cache/app/apicurio-registry-app-$version-runner.jar" ]] ||
        die "the distribution in $cache/app has no apicurio-registry-app-$version-runner.jar"
      train_cds "$cache"
      touch "$cache/.cds-tried" "$cache/.complete"
    fi
  ) 9>"$cache/.lock"
  echo "$cache"
}

# train_cds starts the registry once, asks it one question and stops it,
# so the JVM writes a class-data-sharing archive of what it loaded: later
# starts map it instead of loading and verifying those classes again (2.4 s
# instead of 5.3 s to the first answer here). Without it they still work.
train_cds() {
  local cache="$1" port pid
  port="$(pick_port)"
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ArchiveClassesAtExit="$cache/app.jsa" \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" -Dquarkus.log.level=WARN \
    -jar "$cache/app/apicurio-registry-app-$version-runner.jar" >"$cache/cds.log" 2>&1 </dev/null 9>&- &
  pid=$!
  local deadline=$((SECONDS + 120))
  until curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
    -d '{"compatibility":"BACKWARD"}' "http://127.0.0.1:$port/apis/ccompat/v7/config/cds"; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then break; fi
    sleep 0.2
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [[ -s "$cache/app.jsa" ]] || rm -f "$cache/app.jsa"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  local p
  for _ in $(seq 200); do
    p=$((15000 + RANDOM % 17000))
    if port_free "$p"; then echo "$p"; return; fi
  done
  die "no free port found on 127.0.0.1"
}

registry_pid() {
  local dir="$1" pid
  [[ -f "$dir/pid" ]] || return 1
  pid="$(cat "$dir/pid")"
  # The pid must still be this DIR's JVM, not a recycled number.
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -qsF "outbox.registry.dir=$dir" "/proc/$pid/cmdline" && echo "$pid"
}

url() { echo "http://127.0.0.1:$(cat "$1/port")/apis/ccompat/v7"; }

# watch stops DIR's registry once the process OUTBOX_REGISTRY_WATCH_PID is gone.
watch() {
  local dir="$1" pid="$2"
  [[ -f "$dir/watch.pid" ]] && kill -0 "$(cat "$dir/watch.pid")" 2>/dev/null && return
  (
    trap '' HUP
    while kill -0 "$pid" 2>/dev/null; do sleep 1; done
    "$0" stop "$dir" >/dev/null 2>&1
  ) </dev/null >/dev/null 2>&1 8>&- &
  echo $! >"$dir/watch.pid"
}

cmd_start() {
  local dir="${1:-}"
  [[ -n "$dir" && "$dir" != -* ]] || usage
  need_java
  local d
  d="$(dist)" || exit 1
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  (
    flock 8
    if ! registry_pid "$dir" >/dev/null; then
      local port heap="${OUTBOX_REGISTRY_HEAP:--Xmx256m -Xms64m}" cds=""
      # The archive fits the JVM that wrote it; another JVM ignores it.
      if [[ -s "$d/app.jsa" ]]; then cds="-XX:SharedArchiveFile=$d/app.jsa -Xlog:cds=off -Xlog:cds+dynamic=off"; fi
      port="$(pick_port)"
      echo "$port" >"$dir/port"
      # shellcheck disable=SC2086
      setsid java $heap $cds -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -Djava.awt.headless=true \
        -Doutbox.registry.dir="$dir" -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
        -Dquarkus.http.access-log.enabled=false -Dquarkus.log.level=WARN \
        -jar "$d/app/apicurio-registry-app-$version-runner.jar" \
        >>"$dir/registry.log" 2>&1 </dev/null 8>&- 9>&- &
      echo $! >"$dir/pid"
      local deadline=$((SECONDS + ${OUTBOX_REGISTRY_START_TIMEOUT:-60}))
      until curl -sf -o /dev/null "$(url "$dir")/subjects"; do
        if ! registry_pid "$dir" >/dev/null; then
          tail -n 40 "$dir/registry.log" >&2
          die "the registry of $dir exited while starting (log above: $dir/registry.log)"
        fi
        if ((SECONDS >= deadline)); then
          tail -n 40 "$dir/registry.log" >&2
          die "the registry of $dir did not answer within ${OUTBOX_REGISTRY_START_TIMEOUT:-60}s ($dir/registry.log)"
        fi
        sleep 0.2
      done
    fi
    if [[ -n "${OUTBOX_REGISTRY_WATCH_PID:-}" ]]; then watch "$dir" "$OUTBOX_REGISTRY_WATCH_PID"; fi
  ) 8>"$dir/.lock"
  url "$dir"
}

cmd_stop() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || usage
  [[ -d "$dir" ]] || return 0
  dir="$(cd "$dir" && pwd)"
  local pid
  if pid="$(registry_pid "$dir")"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  fi
  rm -f "$dir/pid"
  if [[ -f "$dir/watch.pid" ]]; then
    pid="$(cat "$dir/watch.pid")"
    [[ "$pid" != "$BASHPID" && "$pid" != "$PPID" ]] && kill "$pid" 2>/dev/null || true
    rm -f "$dir/watch.pid"
  fi
}

cmd_status() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || usage
  dir="$(cd "$dir" && pwd)"
  local pid
  if pid="$(registry_pid "$dir")"; then echo "registry: running (pid $pid)"; url "$dir"; else echo "registry: stopped"; return 1; fi
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  dist) dist ;;
  *) usage ;;
esac
