-- The claim-check Postgres store (package claimcheck, migration
-- 00006_claimcheck.sql). Every query names its tables after
-- /* TEMPLATE: schema */, which the runtime replaces with the configured schema.

-- name: PutClaimCheckPayload :exec
-- Runs in the writer's transaction, next to the events row that references it.
-- A second put for the same event (a ClaimAndWrite retry with the caller's
-- event id) keeps the first: the events row of the same id cannot be written
-- twice either.
INSERT INTO /* TEMPLATE: schema */claim_check_payloads (event_id, payload)
VALUES (@event_id, @payload)
ON CONFLICT (event_id) DO NOTHING;

-- name: GetClaimCheckPayload :one
SELECT payload FROM /* TEMPLATE: schema */claim_check_payloads
WHERE event_id = @event_id;
