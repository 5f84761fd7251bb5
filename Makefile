# The two commands in the README are `make demo` and `make test`.
.PHONY: demo test generate verify lint bench soak build

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

bench:           ## Go benchmarks (writer overhead, eos throughput, sink ledger)
	go test -run '^$$' -bench . -benchtime 3s ./outbox/ ./eos/ ./sink/

soak:            ## crash and soak tests at the full scale the issues name
	OUTBOX_SOAK=1 go test -race -count=1 -timeout 90m ./...
