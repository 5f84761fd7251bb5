#!/usr/bin/env bash
# The project's test command (README, `make test`, .ci/run): checks that the
# generated code is current and the code is formatted and vetted, then runs
# every test with the race detector against a real Postgres: once on
# franz-go's in-process kfake (fast unit tests), then every exactly-once suite
# on a real Apache Kafka broker started from Maven Central jars
# (scripts/kafka.sh), with transaction.version=2 (KIP-890, Kafka 4.x's
# default) and the crash suites again with transaction.version=1.
#
# OUTBOX_TEST_FLAGS adds go test flags to every pass; OUTBOX_SOAK=1 runs the
# crash and soak tests at the scale the issues name (`make soak`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-postgres.sh
bash scripts/ensure-kafka.sh
bash scripts/ensure-node-pg.sh >/dev/null
# The schema registry (Apicurio, from Maven Central) and Confluent's Python
# client (PyPI), for the schema tests: fetched once here, before parallel test
# binaries want them.
bash scripts/ensure-registry.sh >/dev/null
bash scripts/ensure-pyconfluent.sh >/dev/null
# promtool (Debian's prometheus package) and helm (pinned, from the module
# proxy) for the deploy/ checks, which run as Go tests in the kfake pass.
bash scripts/check-deploy.sh tools
# Debian's chromium, for the console's browser test.
bash scripts/ensure-chromium.sh >/dev/null

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

# Fetch the broker's jars, and Kafka Connect's with Debezium's (the peer
# `outbox bench compare` measures against), once, before parallel test
# binaries want them. An assignment, not an echo of $(...), so a failed fetch
# stops here.
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)"
jars="$(bash scripts/kafka.sh jars)"
echo "== Apache Kafka $kafka_version jars: $jars"
jars="$(bash scripts/connect.sh jars)"
echo "== Kafka Connect and Debezium jars: $jars"

# Tests that always start Apache Kafka clusters of their own (three nodes,
# SASL_SSL, a proxy in front) or need the real broker's behaviour run in the
# Apache pass only.
apache_only='TestMemberKilledWhileJoining|TestBrokerBounce|TestBrokerOutage|TestZombie|TestNetFault|TestSecureKafka|TestKcat|TestDemoApache|TestSchemaWire'
# The exactly-once suites: every package whose tests count records through
# Kafka transactions.
eos_pkgs=(./relay/ ./eos/... ./sink/ ./internal/ops/deadletter/ ./internal/ops/lagcheck/ ./internal/ops/topicspec/)
crash_tests='TestCrash|TestRepublishKilled|TestSlotDroppedUnderLoad|TestWalsender|TestPostgresRestart|TestHugeTransaction|TestStandby|TestInterleaved|TestTransactionsKillRestart|TestRebalanceChurn|TestFencedProducer|TestReplayKilled'

echo "== test on kfake (race detector on)"
go test -race -count=1 -timeout 30m -skip "$apache_only" ${OUTBOX_TEST_FLAGS:-} ./...

echo "== exactly-once suites on Apache Kafka $kafka_version, transaction.version=2 (race detector on)"
OUTBOX_TEST_KAFKA=apache OUTBOX_TEST_KAFKA_TRANSACTION_VERSION=2 \
  go test -race -count=1 -timeout 40m ${OUTBOX_TEST_FLAGS:-} "${eos_pkgs[@]}"
OUTBOX_TEST_KAFKA=apache OUTBOX_TEST_KAFKA_TRANSACTION_VERSION=2 \
  go test -race -count=1 -timeout 20m -run "$apache_only" ${OUTBOX_TEST_FLAGS:-} ./cmd/outbox/

echo "== crash suites on Apache Kafka $kafka_version, transaction.version=1 (race detector on)"
OUTBOX_TEST_KAFKA=apache OUTBOX_TEST_KAFKA_TRANSACTION_VERSION=1 \
  go test -race -count=1 -timeout 30m -run "$crash_tests" ${OUTBOX_TEST_FLAGS:-} ./relay/ ./eos/ ./internal/ops/deadletter/
