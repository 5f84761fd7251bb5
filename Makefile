# The two commands in the README are `make demo` and `make test`.
.PHONY: demo test generate verify lint bench soak build kafka kafka-stop

demo:            ## run the whole pipeline on a throwaway Postgres and an embedded Kafka
	bash scripts/ensure-postgres.sh
	go run ./cmd/outbox demo

test:            ## verify generated code, vet, lint, and run every test with -race
	bash scripts/test.sh

build:
	go build -o bin/outbox ./cmd/outbox

generate:        ## regenerate the sqlc query layer from queries/ and migrations/
	go tool sqlc generate

verify:          ## generated code current, formatted, vetted
	go tool sqlc diff
	test -z "$$(gofmt -l .)"
	go vet ./...

lint:
	go vet ./...
	go tool staticcheck ./...

# BENCHTIME is go test's -benchtime: `make bench BENCHTIME=1x` runs each benchmark once.
BENCHTIME ?= 3s

bench:           ## Go benchmarks (writer overhead, eos throughput, sink ledger)
	go test -run '^$$' -bench . -benchtime $(BENCHTIME) ./outbox/ ./eos/ ./sink/

soak:            ## crash, bounce and soak tests at the full scale the issues name, on Apache Kafka
	bash scripts/ensure-kafka.sh
	OUTBOX_SOAK=1 OUTBOX_TEST_KAFKA=apache go test -race -count=1 -timeout 180m ./relay/ ./eos/... ./sink/ ./internal/ops/deadletter/ ./cmd/outbox/

kafka:           ## start a local Apache Kafka broker in .kafka/ (prints the bootstrap list); `make kafka-stop` stops it
	bash scripts/kafka.sh start .kafka

kafka-stop:
	bash scripts/kafka.sh stop .kafka
