// Package console is the on-call web console (`outbox console`): a
// server-rendered http.Handler that shows the pipeline (relay slots, consumer
// group lag with Burrow statuses, sink ledger counts, dead letters, a chart of
// the last hour), one order's journey from the outbox row to the external
// API's answer, the dead letters with a dry-run-first replay and quarantine,
// and the ledger per status over a window. Given the stages' /metrics URLs it
// also shows what only a stage process knows: a relay's active or standby
// role, a sink's breaker state, retries waiting and rates.
//
// Why a package of its own: the console reads what the CLI reads and through
// the same functions (lagcheck for `outbox lag`, sink.Status for `outbox sink
// status`, deadletter for `outbox dlq`), so a page and a command never
// disagree; it imports no stage's internals. Every page also answers
// ?format=json with the figures it renders, which the tests compare with the
// CLI's.
//
// It never writes unless Config.AllowActions is set, and then only for a
// request that carries Config.Token (Authorization: Bearer, or basic auth
// with the token as password): replaying and quarantining dead letters are
// the actions.
package console
