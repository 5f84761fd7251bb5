#!/usr/bin/env bash
# Runs one Apache Kafka Connect worker in distributed mode with exactly-once
# source support (KIP-618) and Debezium's Postgres connector on its plugin
# path, from Maven Central jars: the peer that `outbox bench compare` measures
# the relay against. No Docker, no downloads besides Maven Central.
#
#   scripts/connect.sh start DIR --bootstrap HOST:PORT[,...] [--group ID]
#   scripts/connect.sh stop DIR
#   scripts/connect.sh pid DIR                       the worker JVM's pid
#   scripts/connect.sh jars                          fetch the jars, print their folder
#
# start fetches the worker and the plugin (scripts/debezium/pom.xml, copied by
# Maven into a cache outside the tree: $OUTBOX_CONNECT_CACHE, default
# ~/.cache/outbox/connect-KAFKA-debezium-DEBEZIUM, reused when present; it
# holds worker/ and plugins/debezium-connector-postgres/), writes
# DIR/worker.properties on first use of DIR (group id, its config, offset and
# status topics with replication factor 1, JSON converters without schemas,
# exactly.once.source.support=enabled, client overrides allowed, a free REST
# port on 127.0.0.1), starts the worker in the background and waits until its
# REST API reports it healthy. It prints the REST URL on its last line; on a
# running DIR it prints the same URL and changes nothing. A stopped DIR starts
# again with the same group, topics and port (connectors and offsets live in
# Kafka). The log is DIR/connect.log.
#
# Environment: OUTBOX_CONNECT_HEAP (default -Xms256m -Xmx2g, what Kafka's
# connect-distributed.sh gives the worker), OUTBOX_CONNECT_JAVA_OPTS (added to
# the JVM flags), OUTBOX_CONNECT_WATCH_PID (stop the worker when that process
# exits: a killed test binary leaves no worker), OUTBOX_CONNECT_START_TIMEOUT
# (seconds, default 120), OUTBOX_CONNECT_STOP_TIMEOUT (seconds, default 30).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
pom="$here/debezium/pom.xml"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
debezium_version="$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' "$pom")"

die() { echo "connect.sh: $*" >&2; exit 1; }

usage() {
  sed -n '7,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need_java() {
  command -v java >/dev/null 2>&1 ||
    die "Java 17 or newer is not installed: apt-get install -y openjdk-17-jre-headless (or set PATH to a JDK 17+)"
  local v
  v="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  [[ "${v%%.*}" -ge 17 ]] 2>/dev/null || die "Java $v is too old for Kafka Connect $kafka_version: install Java 17 or newer (apt-get install -y openjdk-17-jre-headless)"
}

cache_dir() {
  echo "${OUTBOX_CONNECT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox/connect-$kafka_version-debezium-$debezium_version}"
}

# jars fetches the worker's classpath and the connector's plugin folder into
# the cache once and prints the cache folder. A lock keeps parallel test
# binaries from fetching twice.
jars() {
  local cache stamp
  cache="$(cache_dir)"
  stamp="$(sha256sum "$pom" | cut -c1-16)"
  if [[ -f "$cache/.complete-$stamp" ]]; then echo "$cache"; return; fi
  mkdir -p "$cache"
  (
    flock 9
    if [[ ! -f "$cache/.complete-$stamp" ]]; then
      command -v mvn >/dev/null 2>&1 ||
        die "Maven is not installed and the Kafka Connect $kafka_version / Debezium $debezium_version jars are not cached in $cache: apt-get install -y maven"
      echo "connect.sh: fetching Kafka Connect $kafka_version and Debezium $debezium_version from Maven Central into $cache" >&2
      rm -rf "$cache/worker" "$cache/plugins" "$cache"/.complete-*
      mvn -q -B -Dstyle.color=never -f "$pom" -P worker dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$cache/worker" >&2 ||
        die "mvn could not fetch org.apache.kafka:connect-runtime:$kafka_version (is Maven Central reachable?)"
      mvn -q -B -Dstyle.color=never -f "$pom" -P plugin dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$cache/plugins/debezium-connector-postgres" >&2 ||
        die "mvn could not fetch io.debezium:debezium-connector-postgres:$debezium_version (is Maven Central reachable?)"
      touch "$cache/.complete-$stamp"
    fi
  ) 9>"$cache/.lock" || exit 1 # errexit does not reach into cache="$(jars)"
  echo "$cache"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port prints a port nobody listens on, below the ephemeral range.
pick_port() {
  local p
  for _ in $(seq 500); do
    p=$((15000 + RANDOM % 17000))
    if port_free "$p"; then echo "$p"; return; fi
  done
  die "no free port found on 127.0.0.1"
}

# http_status prints the HTTP status of GET PATH on 127.0.0.1:PORT, or 000
# when nothing answers (bash's /dev/tcp: no curl needed).
http_status() {
  local port="$1" path="$2" line
  line="$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$1" >&3
    IFS= read -r l <&3 && printf "%s" "$l"' "$port" "$path" 2>/dev/null)" || true
  line="${line#HTTP/* }"
  echo "${line:0:3}" | grep -E '^[0-9]{3}$' || echo 000
}

worker_pid() {
  local dir="$1" pid
  [[ -f "$dir/pid" ]] || return 1
  pid="$(cat "$dir/pid")"
  # The pid must still be this DIR's JVM, not a recycled number.
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -qsF "$dir/worker.properties" "/proc/$pid/cmdline" && echo "$pid"
}

configure() {
  local dir="$1" bootstrap="$2" group="$3" cache="$4" port
  port="$(pick_port)"
  cat >"$dir/worker.env" <<EOF
PORT=$port
GROUP=$group
BOOTSTRAP=$bootstrap
EOF
  cat >"$dir/worker.properties" <<EOF
# Written by scripts/connect.sh: one distributed Connect worker on loopback.
bootstrap.servers=$bootstrap
group.id=$group
config.storage.topic=$group.configs
config.storage.replication.factor=1
offset.storage.topic=$group.offsets
offset.storage.replication.factor=1
offset.storage.partitions=1
status.storage.topic=$group.status
status.storage.replication.factor=1
status.storage.partitions=1

# Connectors may override these (the outbox connector does: raw bytes).
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false

# KIP-618: source records, their offsets and the task's commit in one Kafka
# transaction per task; the worker fences zombie tasks through the leader.
exactly.once.source.support=enabled
# Lets a connector tune its own producer (producer.override.*).
connector.client.config.override.policy=All

listeners=http://127.0.0.1:$port
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$port
rest.advertised.listener=http

# Plugins are found through their ServiceLoader manifests (KIP-898), which
# Debezium's jars carry: no reflective scan of every jar at start. The scan
# logs one ERROR, "Failed to discover Converter": Debezium's
# CloudEventsConverter looks up a JsonConverter method by reflection that
# connect-json 4.3 no longer has, so it is skipped; nothing here uses it.
plugin.path=$cache/plugins
plugin.discovery=service_load
EOF
  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
# Client configuration dumps and per-request chatter a test worker does not need.
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.common.name = org.apache.kafka.common
logger.common.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
logger.jetty.name = org.eclipse.jetty
logger.jetty.level = WARN
EOF
}

start_worker() {
  local dir="$1" cache="$2"
  if worker_pid "$dir" >/dev/null; then return; fi
  local heap="${OUTBOX_CONNECT_HEAP:--Xms256m -Xmx2g}"
  touch "$dir/connect.log"
  # Mark where this start's log begins, so a failure shows this start's lines.
  stat -c %s "$dir/connect.log" >"$dir/log-offset"
  # The JVM flags of Kafka's kafka-run-class.sh (G1, short pauses): the
  # worker as Apache Kafka ships it, with the full JIT.
  # shellcheck disable=SC2086
  setsid java $heap -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" ${OUTBOX_CONNECT_JAVA_OPTS:-} \
    -cp "$cache/worker/*" org.apache.kafka.connect.cli.ConnectDistributed "$dir/worker.properties" \
    >>"$dir/connect.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$dir/pid"
}

log_tail() {
  local dir="$1" off
  off="$(cat "$dir/log-offset" 2>/dev/null || echo 0)"
  tail -c +"$((off + 1))" "$dir/connect.log" | tail -n 40 >&2
}

# wait_ready waits until GET /health answers 200: the worker has joined its
# group and read the config topic, so a connector can be created.
wait_ready() {
  local dir="$1" port="$2" timeout="${OUTBOX_CONNECT_START_TIMEOUT:-120}"
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if [[ "$(http_status "$port" /health)" == 200 ]]; then return; fi
    if ! worker_pid "$dir" >/dev/null; then
      log_tail "$dir"
      die "the Connect worker of $dir exited while starting (log above: $dir/connect.log)"
    fi
    sleep 0.2
  done
  log_tail "$dir"
  die "the Connect worker of $dir did not become healthy within ${timeout}s ($dir/connect.log)"
}

# watch stops the DIR's worker once the process OUTBOX_CONNECT_WATCH_PID is gone.
watch() {
  local dir="$1" pid="$2"
  [[ -f "$dir/watch.pid" ]] && kill -0 "$(cat "$dir/watch.pid")" 2>/dev/null && return
  (
    trap '' HUP
    while kill -0 "$pid" 2>/dev/null; do sleep 1; done
    "$0" stop "$dir" >/dev/null 2>&1
  ) </dev/null >/dev/null 2>&1 8>&- 9>&- &
  echo $! >"$dir/watch.pid"
}

cmd_start() {
  local dir="" bootstrap="" group=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --bootstrap) [[ $# -ge 2 ]] || die "--bootstrap needs HOST:PORT"; bootstrap="$2"; shift 2 ;;
      --bootstrap=*) bootstrap="${1#*=}"; shift ;;
      --group) [[ $# -ge 2 ]] || die "--group needs an id"; group="$2"; shift 2 ;;
      --group=*) group="${1#*=}"; shift ;;
      -h|--help) usage ;;
      -*) die "unknown option $1" ;;
      *) [[ -z "$dir" ]] || die "one DIR only"; dir="$1"; shift ;;
    esac
  done
  [[ -n "$dir" ]] || usage
  need_java
  local cache
  cache="$(jars)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  (
    flock 8
    if [[ -f "$dir/worker.env" ]]; then
      source "$dir/worker.env"
      [[ -z "$bootstrap" || "$bootstrap" == "$BOOTSTRAP" ]] || die "$dir was made with --bootstrap $BOOTSTRAP; use a new DIR for $bootstrap"
      [[ -z "$group" || "$group" == "$GROUP" ]] || die "$dir was made with --group $GROUP; use a new DIR for $group"
    else
      [[ -n "$bootstrap" ]] || die "start $dir needs --bootstrap HOST:PORT (the Kafka cluster the worker stores its state in)"
      [[ "$bootstrap" =~ ^[^,[:space:]]+:[0-9]+(,[^,[:space:]]+:[0-9]+)*$ ]] || die "--bootstrap must be HOST:PORT[,HOST:PORT...], not $bootstrap"
      if [[ -z "$group" ]]; then group="outbox-connect-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"; fi
      [[ "$group" =~ ^[A-Za-z0-9._-]+$ ]] || die "--group must be letters, digits, '.', '_' or '-', not $group"
      configure "$dir" "$bootstrap" "$group" "$cache"
    fi
    source "$dir/worker.env"
    start_worker "$dir" "$cache"
    wait_ready "$dir" "$PORT"
    echo "http://127.0.0.1:$PORT" >"$dir/rest.url"
    if [[ -n "${OUTBOX_CONNECT_WATCH_PID:-}" ]]; then watch "$dir" "$OUTBOX_CONNECT_WATCH_PID"; fi
  ) 8>"$dir/.lock"
  cat "$dir/rest.url"
}

cmd_stop() {
  local dir="${1:-}" pid
  [[ -n "$dir" ]] || usage
  [[ -d "$dir" ]] || return 0
  dir="$(cd "$dir" && pwd)"
  if pid="$(worker_pid "$dir")"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + ${OUTBOX_CONNECT_STOP_TIMEOUT:-30}))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$dir/pid"
  if [[ -f "$dir/watch.pid" ]]; then
    pid="$(cat "$dir/watch.pid")"
    [[ "$pid" != "$BASHPID" && "$pid" != "$PPID" ]] && kill "$pid" 2>/dev/null || true
    rm -f "$dir/watch.pid"
  fi
}

cmd_pid() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || usage
  [[ -d "$dir" ]] || die "$dir does not exist"
  dir="$(cd "$dir" && pwd)"
  worker_pid "$dir" || die "no Connect worker is running in $dir"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  pid) shift; cmd_pid "$@" ;;
  jars) need_java; jars ;;
  *) usage ;;
esac
