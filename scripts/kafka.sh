#!/usr/bin/env bash
# Runs a real Apache Kafka cluster (KRaft, combined broker+controller nodes) on
# 127.0.0.1 from Maven Central jars: the ground truth for every exactly-once
# test. No Docker, no downloads besides Maven Central.
#
#   scripts/kafka.sh start DIR [--brokers N] [--transaction-version 1|2] [--tls-sasl]
#   scripts/kafka.sh stop DIR
#   scripts/kafka.sh node DIR ID start|stop|kill     one node: start, SIGTERM and wait, SIGKILL
#   scripts/kafka.sh status DIR
#   scripts/kafka.sh jars                             fetch the jars, print their folder
#
# start fetches the broker (scripts/kafka/pom.xml, copied by Maven into a cache
# outside the tree: $OUTBOX_KAFKA_CACHE, default ~/.cache/outbox/kafka-VERSION,
# reused when present), formats KRaft storage on first use of DIR and starts
# the nodes that are not running. It prints the bootstrap list on its last
# line; on a running DIR it prints the same list and changes nothing. The
# cluster's settings (ports, node count, transaction version) are kept in DIR,
# so a stopped DIR starts again with the same addresses and data.
#
# With --tls-sasl every node also listens with SASL_SSL (SCRAM-SHA-512) on a
# certificate signed by a CA made here; the bootstrap list is then that
# listener's, and DIR/client.env holds the OUTBOX_KAFKA_* settings and
# password a client needs. DIR/bootstrap.plaintext always holds the plaintext
# listener's list.
#
# Environment: OUTBOX_KAFKA_HEAP (default -Xmx512m -Xms128m per node),
# OUTBOX_KAFKA_JAVA_OPTS (added to the JVM flags), OUTBOX_KAFKA_WATCH_PID (stop
# the nodes when that process exits: a killed test binary leaves no broker).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
pom="$here/kafka/pom.xml"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"

die() { echo "kafka.sh: $*" >&2; exit 1; }

usage() {
  sed -n '5,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need_java() {
  command -v java >/dev/null 2>&1 ||
    die "Java 17 or newer is not installed: apt-get install -y openjdk-17-jre-headless (or set PATH to a JDK 17+)"
  local v
  v="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  [[ "${v%%.*}" -ge 17 ]] 2>/dev/null || die "Java $v is too old for Kafka $kafka_version: install Java 17 or newer (apt-get install -y openjdk-17-jre-headless)"
}

# jars fetches the broker's runtime classpath into the cache once and prints
# the folder. A lock keeps parallel test binaries from fetching twice.
jars() {
  local cache="${OUTBOX_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox/kafka-$kafka_version}"
  local stamp
  stamp="$(sha256sum "$pom" | cut -c1-16)"
  if [[ -f "$cache/.complete-$stamp" ]]; then echo "$cache"; return; fi
  mkdir -p "$cache"
  (
    flock 9
    if [[ ! -f "$cache/.complete-$stamp" ]]; then
      command -v mvn >/dev/null 2>&1 ||
        die "Maven is not installed and the Kafka $kafka_version jars are not cached in $cache: apt-get install -y maven"
      echo "kafka.sh: fetching Apache Kafka $kafka_version from Maven Central into $cache" >&2
      rm -f "$cache"/*.jar "$cache"/.complete-*
      mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$cache" >&2 ||
        die "mvn could not fetch org.apache.kafka:kafka_2.13:$kafka_version (is Maven Central reachable?)"
      touch "$cache/.complete-$stamp"
    fi
  ) 9>"$cache/.lock"
  echo "$cache"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_ports prints COUNT distinct ports nobody listens on, below the
# ephemeral range so a client's outgoing connection never takes one between
# restarts of a node.
pick_ports() {
  local want="$1" p
  local -a got=()
  for _ in $(seq 500); do
    ((${#got[@]} < want)) || break
    p=$((15000 + RANDOM % 17000))
    if port_free "$p" && [[ " ${got[*]:-} " != *" $p "* ]]; then got+=("$p"); fi
  done
  ((${#got[@]} == want)) || die "no $want free ports found on 127.0.0.1"
  echo "${got[*]}"
}

node_pid() {
  local f="$1/node-$2/pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  # The pid must still be this node's JVM, not a recycled number.
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -qsF "$1/node-$2/server.properties" "/proc/$pid/cmdline" && echo "$pid"
}

load() {
  local dir="$1"
  [[ -f "$dir/cluster.env" ]] || die "$dir holds no cluster: run scripts/kafka.sh start $dir first"
  # shellcheck disable=SC1091
  source "$dir/cluster.env"
}

configure() {
  local dir="$1" n="$2" tv="$3" tls="$4"
  mkdir -p "$dir"
  local i plist="" clist="" slist="" voters=""
  local -a all
  read -r -a all <<<"$(pick_ports $((n * (tls == 1 ? 3 : 2))))"
  for i in $(seq 0 $((n - 1))); do
    plist+="${plist:+,}${all[$i]}"
    clist+="${clist:+,}${all[$((n + i))]}"
    if [[ "$tls" == 1 ]]; then slist+="${slist:+,}${all[$((2 * n + i))]}"; fi
  done
  IFS=, read -r -a pp <<<"$plist"
  IFS=, read -r -a cp <<<"$clist"
  for i in $(seq "$n"); do voters+="${voters:+,}$i@127.0.0.1:${cp[$((i - 1))]}"; done
  local rf=$((n < 3 ? n : 3)) isr=1
  [[ "$n" -ge 3 ]] && isr=2
  local password=""
  if [[ "$tls" == 1 ]]; then
    password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    make_tls "$dir"
  fi
  cat >"$dir/cluster.env" <<EOF
N=$n
TV=$tv
TLS=$tls
PORTS=$plist
CPORTS=$clist
SPORTS=$slist
VOTERS=$voters
RF=$rf
ISR=$isr
SASL_USER=outbox
SASL_PASSWORD=$password
CLUSTER_ID=
EOF
  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
# Per-topic and per-request chatter a test cluster does not need.
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.logs.name = org.apache.kafka.storage.internals.log
logger.logs.level = WARN
logger.unified.name = kafka.log
logger.unified.level = WARN
logger.partition.name = kafka.cluster.Partition
logger.partition.level = WARN
logger.replica.name = kafka.server.ReplicaFetcherThread
logger.replica.level = WARN
logger.rfm.name = kafka.server.ReplicaFetcherManager
logger.rfm.level = WARN
logger.ram.name = kafka.server.ReplicaAlterLogDirsManager
logger.ram.level = WARN
EOF
  for i in $(seq "$n"); do write_properties "$dir" "$i"; done
}

write_properties() {
  local dir="$1" i="$2"
  source "$dir/cluster.env"
  IFS=, read -r -a pp <<<"$PORTS"
  IFS=, read -r -a cp <<<"$CPORTS"
  IFS=, read -r -a sp <<<"$SPORTS"
  local p="${pp[$((i - 1))]}" c="${cp[$((i - 1))]}"
  local listeners="PLAINTEXT://127.0.0.1:$p,CONTROLLER://127.0.0.1:$c" adv="PLAINTEXT://127.0.0.1:$p"
  local proto="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [[ "$TLS" == 1 ]]; then
    local s="${sp[$((i - 1))]}"
    listeners+=",SASL_SSL://127.0.0.1:$s"
    adv+=",SASL_SSL://127.0.0.1:$s"
    proto+=",SASL_SSL:SASL_SSL"
  fi
  mkdir -p "$dir/node-$i/data"
  cat >"$dir/node-$i/server.properties" <<EOF
# Written by scripts/kafka.sh: node $i of $N on loopback.
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$VOTERS
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners=$listeners
advertised.listeners=$adv
listener.security.protocol.map=$proto
log.dirs=$dir/node-$i/data

# Durability as the transactions system test runs it.
default.replication.factor=$RF
min.insync.replicas=$ISR
offsets.topic.replication.factor=$RF
offsets.topic.num.partitions=$((N < 3 ? 4 : 6))
transaction.state.log.replication.factor=$RF
transaction.state.log.min.isr=$ISR
transaction.state.log.num.partitions=$N
share.coordinator.state.topic.replication.factor=$RF
share.coordinator.state.topic.min.isr=$ISR
num.partitions=1
auto.create.topics.enable=false
unclean.leader.election.enable=false

# Fast test settings: no rebalance delay, timed-out transactions aborted
# within a second, few threads on a small machine.
group.initial.rebalance.delay.ms=0
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
num.network.threads=2
num.io.threads=4
background.threads=4
num.replica.fetchers=1
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
EOF
  if [[ "$TLS" == 1 ]]; then
    cat >>"$dir/node-$i/server.properties" <<EOF

# SASL_SSL for clients: SCRAM-SHA-512 over TLS with a certificate from DIR/tls.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$dir/tls/broker-keystore.pem
EOF
  fi
}

# make_tls makes a CA and a broker certificate for 127.0.0.1 and localhost.
make_tls() {
  local t="$1/tls"
  command -v openssl >/dev/null 2>&1 || die "--tls-sasl needs openssl: apt-get install -y openssl"
  mkdir -p "$t"
  (
    cd "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=outbox test CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout broker.key -out broker.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
      -extfile broker.ext -out broker.pem 2>/dev/null
    # Kafka's PEM keystore: an unencrypted PKCS#8 key, then the chain.
    openssl pkcs8 -topk8 -nocrypt -in broker.key >broker-keystore.pem
    cat broker.pem ca.pem >>broker-keystore.pem
    rm -f broker.csr broker.ext ca.srl
  )
}

format() {
  local dir="$1" jars="$2"
  source "$dir/cluster.env"
  if [[ -z "$CLUSTER_ID" ]]; then
    CLUSTER_ID="$(java -cp "$jars/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    [[ -n "$CLUSTER_ID" ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
    sed -i "s/^CLUSTER_ID=.*/CLUSTER_ID=$CLUSTER_ID/" "$dir/cluster.env"
  fi
  local i
  for i in $(seq "$N"); do
    [[ -f "$dir/node-$i/data/meta.properties" ]] && continue
    local -a extra=(--feature "transaction.version=$TV")
    if [[ "$TLS" == 1 ]]; then extra+=(--add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]"); fi
    java -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$jars/*" kafka.tools.StorageTool format \
      -t "$CLUSTER_ID" -c "$dir/node-$i/server.properties" "${extra[@]}" >"$dir/node-$i/format.log" 2>&1 ||
      { cat "$dir/node-$i/format.log" >&2; die "formatting node $i failed (log above)"; }
  done
}

start_node() {
  local dir="$1" i="$2" jars="$3"
  if node_pid "$dir" "$i" >/dev/null; then return; fi
  local heap="${OUTBOX_KAFKA_HEAP:--Xmx512m -Xms128m}"
  # shellcheck disable=SC2086
  setsid java $heap -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    ${OUTBOX_KAFKA_JAVA_OPTS:-} -cp "$jars/*" kafka.Kafka "$dir/node-$i/server.properties" \
    >>"$dir/node-$i/server.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$dir/node-$i/pid"
  # Mark where this start's log begins, so readiness is read from it only.
  echo "$(stat -c %s "$dir/node-$i/server.log")" >"$dir/node-$i/log-offset"
}

wait_ready() {
  local dir="$1" i="$2" deadline=$((SECONDS + ${OUTBOX_KAFKA_START_TIMEOUT:-90}))
  local off
  off="$(cat "$dir/node-$i/log-offset" 2>/dev/null || echo 0)"
  while ((SECONDS < deadline)); do
    if tail -c +"$((off + 1))" "$dir/node-$i/server.log" | grep -q "Kafka Server started"; then return; fi
    if ! node_pid "$dir" "$i" >/dev/null; then
      tail -n 40 "$dir/node-$i/server.log" >&2
      die "node $i of $dir exited while starting (log above: $dir/node-$i/server.log)"
    fi
    sleep 0.2
  done
  tail -n 40 "$dir/node-$i/server.log" >&2
  die "node $i of $dir did not start within ${OUTBOX_KAFKA_START_TIMEOUT:-90}s ($dir/node-$i/server.log)"
}

bootstrap() {
  local dir="$1" ports="$2" out="" p
  IFS=, read -r -a pp <<<"$ports"
  for p in "${pp[@]}"; do out+="${out:+,}127.0.0.1:$p"; done
  echo "$out"
}

# watch stops the DIR's nodes once the process OUTBOX_KAFKA_WATCH_PID is gone.
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
  local dir="" n=1 tv=2 tls=0 given_n="" given_tv="" given_tls=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --brokers) n="$2"; given_n=1; shift 2 ;;
      --brokers=*) n="${1#*=}"; given_n=1; shift ;;
      --transaction-version) tv="$2"; given_tv=1; shift 2 ;;
      --transaction-version=*) tv="${1#*=}"; given_tv=1; shift ;;
      --tls-sasl) tls=1; given_tls=1; shift ;;
      -h|--help) usage ;;
      -*) die "unknown option $1" ;;
      *) [[ -z "$dir" ]] || die "one DIR only"; dir="$1"; shift ;;
    esac
  done
  [[ -n "$dir" ]] || usage
  [[ "$n" =~ ^[1-9]$ ]] || die "--brokers must be 1 to 9, not $n"
  [[ "$tv" == 1 || "$tv" == 2 ]] || die "--transaction-version must be 1 or 2, not $tv"
  need_java
  local j
  j="$(jars)" || exit 1
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  (
    flock 8
    if [[ -f "$dir/cluster.env" ]]; then
      source "$dir/cluster.env"
      [[ -z "$given_n" || "$n" == "$N" ]] || die "$dir was made with --brokers $N; stop it and use a new DIR for $n"
      [[ -z "$given_tv" || "$tv" == "$TV" ]] || die "$dir was made with --transaction-version $TV; use a new DIR for $tv"
      [[ -z "$given_tls" || "$TLS" == 1 ]] || die "$dir was made without --tls-sasl; use a new DIR"
    else
      configure "$dir" "$n" "$tv" "$tls"
    fi
    format "$dir" "$j"
    source "$dir/cluster.env"
    local i
    for i in $(seq "$N"); do start_node "$dir" "$i" "$j"; done
    for i in $(seq "$N"); do wait_ready "$dir" "$i"; done
    bootstrap "$dir" "$PORTS" >"$dir/bootstrap.plaintext"
    if [[ "$TLS" == 1 ]]; then
      bootstrap "$dir" "$SPORTS" >"$dir/bootstrap"
      cat >"$dir/client.env" <<EOF
OUTBOX_BROKERS=$(cat "$dir/bootstrap")
OUTBOX_KAFKA_TLS=true
OUTBOX_KAFKA_TLS_CA=$dir/tls/ca.pem
OUTBOX_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
OUTBOX_KAFKA_SASL_USER=$SASL_USER
OUTBOX_KAFKA_SASL_PASSWORD=$SASL_PASSWORD
EOF
    else
      cp "$dir/bootstrap.plaintext" "$dir/bootstrap"
      echo "OUTBOX_BROKERS=$(cat "$dir/bootstrap")" >"$dir/client.env"
    fi
    if [[ -n "${OUTBOX_KAFKA_WATCH_PID:-}" ]]; then watch "$dir" "$OUTBOX_KAFKA_WATCH_PID"; fi
  ) 8>"$dir/.lock"
  cat "$dir/bootstrap"
}

stop_pids() {
  local timeout="$1"; shift
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + timeout))
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "$@"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
}

cmd_stop() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || usage
  [[ -f "$dir/cluster.env" ]] || return 0
  load "$dir"
  local -a pids=()
  local i pid
  for i in $(seq "$N"); do
    if pid="$(node_pid "$dir" "$i")"; then pids+=("$pid"); fi
  done
  if [[ ${#pids[@]} -gt 0 ]]; then stop_pids "${OUTBOX_KAFKA_STOP_TIMEOUT:-30}" "${pids[@]}"; fi
  for i in $(seq "$N"); do rm -f "$dir/node-$i/pid"; done
  if [[ -f "$dir/watch.pid" ]]; then
    pid="$(cat "$dir/watch.pid")"
    [[ "$pid" != "$BASHPID" && "$pid" != "$PPID" ]] && kill "$pid" 2>/dev/null || true
    rm -f "$dir/watch.pid"
  fi
}

cmd_node() {
  local dir="${1:-}" i="${2:-}" action="${3:-}"
  [[ -n "$dir" && -n "$i" && -n "$action" ]] || usage
  dir="$(cd "$dir" && pwd)"
  load "$dir"
  [[ "$i" -ge 1 && "$i" -le "$N" ]] 2>/dev/null || die "node $i: $dir has nodes 1 to $N"
  local pid=""
  pid="$(node_pid "$dir" "$i")" || pid=""
  case "$action" in
    start)
      local j
      j="$(jars)" || exit 1
      start_node "$dir" "$i" "$j"
      wait_ready "$dir" "$i"
      ;;
    stop) if [[ -n "$pid" ]]; then stop_pids "${OUTBOX_KAFKA_STOP_TIMEOUT:-30}" "$pid"; fi ;;
    kill)
      if [[ -n "$pid" ]]; then
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
      fi
      ;;
    *) die "node action must be start, stop or kill, not $action" ;;
  esac
}

cmd_status() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || usage
  load "$dir"
  local i pid
  for i in $(seq "$N"); do
    if pid="$(node_pid "$dir" "$i")"; then echo "node $i: running (pid $pid)"; else echo "node $i: stopped"; fi
  done
  echo "transaction.version=$TV tls-sasl=$TLS"
  cat "$dir/bootstrap" 2>/dev/null || bootstrap "$dir" "$PORTS"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  node) shift; cmd_node "$@" ;;
  status) shift; cmd_status "$@" ;;
  jars) need_java; jars ;;
  *) usage ;;
esac
