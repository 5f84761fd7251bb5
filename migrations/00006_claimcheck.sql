-- Claim-check payloads: the Postgres store of package claimcheck. An event
-- whose payload is too large for Kafka (or marked by its writer) keeps its
-- payload here, written in the writer's own transaction, and the events row
-- carries the reference (header outbox.claim-check = pg:<event_id>) and a small
-- stub instead. Commit and rollback therefore cover both rows at once.
--
-- The table is range-partitioned by event_id into the same UTC days as events,
-- so maintain() drops a day of payloads together with that day of events: the
-- outbox's retention prunes stored payloads, no sweep needed. maintain() is
-- restated below (CREATE OR REPLACE; 00001 stays as it landed) to manage both
-- tables' partitions. The table is not in the relay's publication, which names
-- the events table alone: the relay streams events, never payload rows.
--
-- Objects are created unqualified, in the first schema of search_path, like
-- 00001_outbox.sql.

-- +goose Up

CREATE TABLE claim_check_payloads (
    event_id   uuid        NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id)
) PARTITION BY RANGE (event_id);

-- Like events_default: an insert never fails for want of a day partition.
CREATE TABLE claim_check_payloads_default PARTITION OF claim_check_payloads DEFAULT;

-- maintain, as in 00001, for every day-partitioned table: events and
-- claim_check_payloads. The actions and objects it returns are those of 00001
-- plus the claim_check_payloads ones.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION maintain(p_retention interval DEFAULT '7 days', p_premake integer DEFAULT 3, p_now timestamptz DEFAULT now())
RETURNS TABLE (action text, object text)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_schema text := current_schema();
    v_table  text;
    v_day    date;
    v_name   text;
    v_lo     uuid;
    v_hi     uuid;
    v_moved  bigint;
    v_part   record;
    v_busy   boolean;
    v_cutoff uuid := uuid7_floor(p_now - p_retention);
BEGIN
    IF p_retention < interval '1 hour' THEN
        RAISE EXCEPTION 'maintain: retention % is below one hour; events must outlive relay lag', p_retention;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(v_schema || '.events maintain'));

    FOREACH v_table IN ARRAY ARRAY['events', 'claim_check_payloads'] LOOP
        FOR v_day IN SELECT generate_series((p_now AT TIME ZONE 'UTC')::date - 1, (p_now AT TIME ZONE 'UTC')::date + p_premake, interval '1 day')::date LOOP
            v_name := v_table || '_p' || to_char(v_day, 'YYYYMMDD');
            CONTINUE WHEN to_regclass(quote_ident(v_schema) || '.' || quote_ident(v_name)) IS NOT NULL;
            v_lo := uuid7_floor(v_day::timestamp AT TIME ZONE 'UTC');
            v_hi := uuid7_floor((v_day + 1)::timestamp AT TIME ZONE 'UTC');
            CONTINUE WHEN v_hi <= v_cutoff;
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE event_id >= %L AND event_id < %L)', v_table || '_default', v_lo, v_hi)
                INTO STRICT v_busy;
            IF v_busy THEN
                -- Rows of this day sit in the default partition: creating the partition
                -- directly would fail, so build it aside, move them, then attach. The
                -- relay publishes inserts only, so the move is not relayed again.
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name, v_table);
                EXECUTE format('WITH moved AS (DELETE FROM %I WHERE event_id >= %L AND event_id < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                    v_table || '_default', v_lo, v_hi, v_name);
                GET DIAGNOSTICS v_moved = ROW_COUNT;
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', v_table, v_name, v_lo, v_hi);
                action := 'created'; object := v_name || ' (moved ' || v_moved || ' rows from ' || v_table || '_default)';
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', v_name, v_table, v_lo, v_hi);
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
            WHERE n.nspname = v_schema AND p.relname = v_table AND c.relname ~ ('^' || v_table || '_p[0-9]{8}$')
            ORDER BY c.relname
        LOOP
            v_day := to_date(substr(v_part.relname, length(v_table) + 3), 'YYYYMMDD');
            CONTINUE WHEN uuid7_floor((v_day + 1)::timestamp AT TIME ZONE 'UTC') > v_cutoff;
            EXECUTE format('DROP TABLE %I', v_part.relname);
            action := 'dropped'; object := v_part.relname;
            RETURN NEXT;
        END LOOP;

        EXECUTE format('DELETE FROM %I WHERE event_id < %L', v_table || '_default', v_cutoff);
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        IF v_moved > 0 THEN
            action := 'deleted'; object := v_moved || ' expired rows from ' || v_table || '_default';
            RETURN NEXT;
        END IF;
    END LOOP;

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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION maintain(p_retention interval DEFAULT '7 days', p_premake integer DEFAULT 3, p_now timestamptz DEFAULT now())
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
DROP TABLE claim_check_payloads;
