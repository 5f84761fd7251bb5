-- The writer's schema: the outbox events table, the idempotency keys, the
-- publication the relay streams, and the retention function.
--
-- Objects are created unqualified, in the first schema of search_path: `outbox
-- migrate --schema NAME` sets it; with the plain goose CLI create the schema and
-- put it in the URL: goose -dir migrations postgres "postgres://...?search_path=outbox" up

-- +goose Up

-- uuid7_floor is the smallest UUIDv7 minted at or after ts: its 48-bit Unix
-- millisecond prefix followed by zeros. Day partitions of events are bounded by it.
CREATE FUNCTION uuid7_floor(ts timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT (lpad(to_hex(floor(extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '00000000000000000000')::uuid $$;

-- events is insert-only: a row is written in the order service's transaction and
-- read by the relay from the WAL, never polled. It is range-partitioned by
-- event_id (UUIDv7, time-ordered) into UTC days, so event_id is unique across the
-- whole table and retention drops whole days.
CREATE TABLE events (
    event_id       uuid        NOT NULL,
    aggregate_type text        NOT NULL CHECK (aggregate_type <> ''),
    aggregate_id   text        NOT NULL CHECK (aggregate_id <> ''),
    event_type     text        NOT NULL CHECK (event_type <> ''),
    -- topic routes the event; empty means derived from aggregate_type by the relay.
    topic          text        NOT NULL DEFAULT '',
    -- fanout_topics also receive the event (secondary topics).
    fanout_topics  text[]      NOT NULL DEFAULT '{}',
    -- kind 'event' goes to a delete-retention topic, 'record' to a compacted one.
    kind           text        NOT NULL DEFAULT 'event' CHECK (kind IN ('event', 'record')),
    content_type   text        NOT NULL DEFAULT 'application/json',
    payload        bytea       NOT NULL,
    -- headers: correlation_id, causation_id, traceparent, tracestate, and the caller's own.
    headers        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at    timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id)
) PARTITION BY RANGE (event_id);

-- The default partition catches an event whose day has no partition yet, so an
-- insert never fails for want of one; maintain() moves such rows into their day.
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- +goose StatementBegin
CREATE FUNCTION events_insert_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'outbox events are insert-only: write a new event instead of updating event %', OLD.event_id
        USING ERRCODE = 'restrict_violation';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_insert_only BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_insert_only();

-- idempotency_keys holds HTTP Idempotency-Key claims (IETF draft / Stripe). A key
-- is claimed in the same transaction as the business rows and the events, and
-- completed with the response to replay.
CREATE TABLE idempotency_keys (
    scope            text        NOT NULL DEFAULT '',
    idem_key         text        NOT NULL CHECK (idem_key <> ''),
    fingerprint      text        NOT NULL,
    status           text        NOT NULL DEFAULT 'started' CHECK (status IN ('started', 'completed')),
    response_code    integer,
    response_headers jsonb,
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (scope, idem_key)
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

-- maintain keeps day partitions from yesterday to premake days ahead, moves rows
-- that fell into the default partition into their day, drops days older than
-- retention and deletes expired idempotency keys. Run it daily or more often
-- (`outbox maintain`, the relay's maintenance loop, or pg_cron). Safe to run
-- concurrently: it serialises on an advisory lock.
-- +goose StatementBegin
CREATE FUNCTION maintain(p_retention interval DEFAULT '7 days', p_premake integer DEFAULT 3, p_now timestamptz DEFAULT now())
RETURNS TABLE (action text, object text)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_schema text := current_schema();
    v_day    date;
    v_name   text;
    v_lo     uuid;
    v_hi     uuid;
    v_moved  bigint;
    v_part   record;
    v_cutoff uuid := uuid7_floor(p_now - p_retention);
BEGIN
    IF p_retention < interval '1 hour' THEN
        RAISE EXCEPTION 'maintain: retention % is below one hour; events must outlive relay lag', p_retention;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(v_schema || '.events maintain'));

    FOR v_day IN SELECT generate_series((p_now AT TIME ZONE 'UTC')::date - 1, (p_now AT TIME ZONE 'UTC')::date + p_premake, interval '1 day')::date LOOP
        v_name := 'events_p' || to_char(v_day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(quote_ident(v_schema) || '.' || quote_ident(v_name)) IS NOT NULL;
        v_lo := uuid7_floor(v_day::timestamp AT TIME ZONE 'UTC');
        v_hi := uuid7_floor((v_day + 1)::timestamp AT TIME ZONE 'UTC');
        CONTINUE WHEN v_hi <= v_cutoff;
        IF EXISTS (SELECT 1 FROM events_default WHERE event_id >= v_lo AND event_id < v_hi) THEN
            -- Rows of this day sit in the default partition: creating the partition
            -- directly would fail, so build it aside, move them, then attach. The
            -- relay publishes inserts only, so the move is not relayed again.
            EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
            EXECUTE format('WITH moved AS (DELETE FROM events_default WHERE event_id >= %L AND event_id < %L RETURNING *) INSERT INTO %I SELECT * FROM moved', v_lo, v_hi, v_name);
            GET DIAGNOSTICS v_moved = ROW_COUNT;
            EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', v_name, v_lo, v_hi);
            action := 'created'; object := v_name || ' (moved ' || v_moved || ' rows from events_default)';
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)', v_name, v_lo, v_hi);
            action := 'created'; object := v_name;
        END IF;
        RETURN NEXT;
    END LOOP;

    FOR v_part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE n.nspname = v_schema AND p.relname = 'events' AND c.relname ~ '^events_p[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        v_day := to_date(substr(v_part.relname, 9), 'YYYYMMDD');
        CONTINUE WHEN uuid7_floor((v_day + 1)::timestamp AT TIME ZONE 'UTC') > v_cutoff;
        EXECUTE format('DROP TABLE %I', v_part.relname);
        action := 'dropped'; object := v_part.relname;
        RETURN NEXT;
    END LOOP;

    DELETE FROM events_default WHERE event_id < v_cutoff;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    IF v_moved > 0 THEN
        action := 'deleted'; object := v_moved || ' expired rows from events_default';
        RETURN NEXT;
    END IF;

    DELETE FROM idempotency_keys WHERE expires_at <= p_now;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    IF v_moved > 0 THEN
        action := 'deleted'; object := v_moved || ' expired idempotency keys';
        RETURN NEXT;
    END IF;
END
$$;
-- +goose StatementEnd

SELECT count(*) FROM maintain();

-- The relay streams this publication: inserts only (pruning and moves are not
-- events), as the partitioned root table so partitions come and go unseen.
-- CREATE PUBLICATION needs CREATE on the database. With the session setting
-- outbox.publication = 'dba' (`outbox migrate up --publication-by-dba`) a role
-- without it leaves the publication to the DBA, who runs the statement raised
-- here as a NOTICE (and printed by `outbox migrate up` and `outbox doctor`).
-- +goose StatementBegin
DO $$
DECLARE
    v_sql text := format('CREATE PUBLICATION %I FOR TABLE %I.events WITH (publish = %L, publish_via_partition_root = true)',
        current_schema() || '_events', current_schema(), 'insert');
BEGIN
    IF current_setting('outbox.publication', true) = 'dba' AND NOT has_database_privilege(current_database(), 'CREATE') THEN
        RAISE NOTICE 'publication left to the DBA, who runs: %;', v_sql;
    ELSE
        EXECUTE v_sql;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('DROP PUBLICATION IF EXISTS %I', current_schema() || '_events');
END
$$;
-- +goose StatementEnd
DROP FUNCTION maintain(interval, integer, timestamptz);
DROP TABLE idempotency_keys;
DROP TABLE events;
DROP FUNCTION events_insert_only();
DROP FUNCTION uuid7_floor(timestamptz);
