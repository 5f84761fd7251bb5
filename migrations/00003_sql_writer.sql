-- Writers in any language. What the Go library (outbox/) checks before it
-- inserts, the database now checks on every insert into events, so a plain
-- INSERT from psql, JDBC, psycopg or node-postgres meets the same rules and gets
-- the same defaults; and the idempotency keys of outbox/idempotency.go are SQL
-- functions with the same outcomes:
--
--   uuid7()                        a new UUIDv7 (the server's uuidv7() on Postgres 18+)
--   events.event_id DEFAULT uuid7()
--   events_validate                BEFORE INSERT trigger: the Go library's checks
--   write_event(...)               inserts one event and returns its id
--   fingerprint(...)               outbox.Fingerprint: a request's hex SHA-256
--   claim_key(...), complete_key(...)  ClaimKey and CompleteKey
--
-- Errors raised here have SQLSTATEs of class OB, one per Go sentinel, so a
-- client in any language branches on the code (JDBC getSQLState(), psycopg
-- e.sqlstate, node-postgres err.code, pgx PgError.Code):
--
--   OB001 event_id is not a UUIDv7               outbox.ErrInvalidEventID
--   OB002 aggregate_type is blank                outbox.ErrMissingAggregateType
--   OB003 aggregate_id is blank                  outbox.ErrMissingAggregateID
--   OB004 event_type is blank                    outbox.ErrMissingEventType
--   OB005 payload over the limit                 outbox.ErrPayloadTooLarge
--   OB006 payload not valid JSON (JSON type)     outbox.ErrInvalidJSON
--   OB007 headers over the limit                 outbox.ErrHeadersTooLarge
--   OB008 topic or fan-out topic not legal       outbox.ErrInvalidTopic
--   OB009 kind not 'event' or 'record'           outbox.ErrInvalidKind
--   OB010 headers not a JSON object of strings   (Go's map[string]string cannot be)
--   OB101 idempotency key in flight: answer 409  outbox.ErrKeyInFlight
--   OB102 key reused with another request: 422   outbox.ErrKeyMismatch
--   OB103 key empty or over 255 bytes: 400       outbox.ErrInvalidKey
--   OB104 complete_key without a started claim   outbox.ErrKeyNotClaimed
--
-- The checks are a trigger, not CHECK constraints: a trigger sees only new
-- inserts, so rows written before this migration are neither scanned nor
-- rewritten (events is insert-only, and a CHECK would be validated on every
-- ATTACH PARTITION that maintain() does after moving old rows out of the
-- default partition); it can raise a message that says what to do, with its own
-- SQLSTATE; and it can fill the Go library's defaults (correlation id, empty
-- kind and content type). Postgres clones it onto every partition, present and
-- future.
--
-- Objects are created unqualified, in the first schema of search_path, like
-- 00001_outbox.sql.

-- +goose Up

-- uuid7 returns a new UUIDv7: the 48-bit Unix millisecond timestamp, version 7,
-- 12 bits of sub-millisecond time (so ids made by one session in order sort in
-- order, to the microsecond), the variant, then 62 random bits. On Postgres 18+
-- the DO block below makes it the server's own uuidv7().
CREATE FUNCTION uuid7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
SELECT encode(
    substring(int8send(us / 1000) FROM 3)
    || substring(int4send(28672 + ((us % 1000) * 4096 / 1000)::integer) FROM 3)
    || substring(uuid_send(gen_random_uuid()) FROM 9), 'hex')::uuid
FROM (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us) AS t
$$;

-- +goose StatementBegin
DO $$
BEGIN
    IF to_regprocedure('pg_catalog.uuidv7()') IS NOT NULL THEN
        CREATE OR REPLACE FUNCTION uuid7() RETURNS uuid
        LANGUAGE sql VOLATILE PARALLEL SAFE
        AS 'SELECT pg_catalog.uuidv7()';
    END IF;
END
$$;
-- +goose StatementEnd

-- A writer that names no event id gets one. Existing rows are not touched.
ALTER TABLE events ALTER COLUMN event_id SET DEFAULT uuid7();

-- events_validate applies the Go library's checks (outbox/write.go validate and
-- headers) to each new row, and its defaults: an empty kind is 'event', an empty
-- content type 'application/json', and a missing correlation_id header is the
-- event id. Its two arguments are the payload and header limits in bytes, the
-- defaults of outbox.Config's MaxPayloadBytes and MaxHeaderBytes. A service
-- that raises those raises these too, as the schema's owner:
--   CREATE OR REPLACE TRIGGER events_validate BEFORE INSERT ON outbox.events
--       FOR EACH ROW EXECUTE FUNCTION outbox.events_validate(4194304, 65536);
-- +goose StatementBegin
CREATE FUNCTION events_validate() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_max_payload bigint := coalesce(TG_ARGV[0], '1048576')::bigint;
    v_max_headers bigint := coalesce(TG_ARGV[1], '65536')::bigint;
    v_media       text;
    v_size        bigint;
    v_topics      text[];
    v_topic       text;
    v_bad         text;
    v_err         text;
    v_detail      text;
    -- Blank as Go's strings.TrimSpace sees it (unicode.IsSpace), whatever the
    -- database's locale: ASCII white space, and in a UTF8 database U+0085,
    -- U+00A0 and the other Unicode White_Space characters.
    v_blank       text := '^[ \t\n\v\f\r]*$';
BEGIN
    IF getdatabaseencoding() = 'UTF8' THEN
        v_blank := '^[ \t\n\v\f\r' || chr(133) || chr(160) || chr(5760) || chr(8192) || '-' || chr(8202)
            || chr(8232) || chr(8233) || chr(8239) || chr(8287) || chr(12288) || ']*$';
    END IF;
    IF NEW.aggregate_type ~ v_blank THEN
        RAISE EXCEPTION 'outbox: aggregate_type is required'
            USING ERRCODE = 'OB002', COLUMN = 'aggregate_type', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                  HINT = 'Name the kind of entity the event is about, e.g. ''order''.';
    END IF;
    IF NEW.aggregate_id ~ v_blank THEN
        RAISE EXCEPTION 'outbox: aggregate_id is required'
            USING ERRCODE = 'OB003', COLUMN = 'aggregate_id', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                  HINT = 'Give the entity''s id: it is the Kafka key, so one aggregate''s events stay in order.';
    END IF;
    IF NEW.event_type ~ v_blank THEN
        RAISE EXCEPTION 'outbox: event_type is required'
            USING ERRCODE = 'OB004', COLUMN = 'event_type', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                  HINT = 'Name what happened, e.g. ''order.created''.';
    END IF;
    IF get_byte(uuid_send(NEW.event_id), 6) >> 4 <> 7 THEN
        RAISE EXCEPTION 'outbox: event_id % is a version % UUID; events need a UUIDv7', NEW.event_id, get_byte(uuid_send(NEW.event_id), 6) >> 4
            USING ERRCODE = 'OB001', COLUMN = 'event_id', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                  DETAIL = 'Events are partitioned and ordered by the time in a UUIDv7.',
                  HINT = 'Leave event_id out to get a new one from uuid7(), or make a UUIDv7 in the client (RFC 9562).';
    END IF;

    IF NEW.kind = '' THEN
        NEW.kind := 'event';
    END IF;
    IF NEW.kind NOT IN ('event', 'record') THEN
        RAISE EXCEPTION 'outbox: kind % is not valid', quote_literal(NEW.kind)
            USING ERRCODE = 'OB009', COLUMN = 'kind', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                  HINT = 'Use ''event'' (a fact, time-retention topic) or ''record'' (latest state, compacted topic).';
    END IF;

    -- Kafka's rule for topic names (envelope.ValidTopic): topic first (empty
    -- means the relay derives it), then each fan-out topic.
    v_topics := ARRAY[NEW.topic] || NEW.fanout_topics;
    FOR i IN 1 .. cardinality(v_topics) LOOP
        v_topic := v_topics[i];
        CONTINUE WHEN i = 1 AND (v_topic IS NULL OR v_topic = '');
        IF v_topic IS NULL OR v_topic IN ('', '.', '..') OR length(v_topic) > 249 OR v_topic !~ '^[a-zA-Z0-9._-]+$' THEN
            RAISE EXCEPTION 'outbox: % % is not a legal Kafka topic name', CASE WHEN i = 1 THEN 'topic' ELSE 'fan-out topic' END, coalesce(quote_literal(v_topic), 'NULL')
                USING ERRCODE = 'OB008', COLUMN = CASE WHEN i = 1 THEN 'topic' ELSE 'fanout_topics' END,
                      TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                      HINT = 'Use 1 to 249 characters of [a-zA-Z0-9._-], not "." or ".."; leave topic empty to let the relay derive it.';
        END IF;
    END LOOP;

    v_size := octet_length(NEW.payload);
    IF v_size > v_max_payload THEN
        RAISE EXCEPTION 'outbox: payload is % bytes, over the limit of % bytes', v_size, v_max_payload
            USING ERRCODE = 'OB005', COLUMN = 'payload', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                  HINT = 'Keep events right-sized: the facts the event owns plus stable ids. The limit is Kafka''s default '
                      || 'max.message.bytes; to raise it, raise the topic''s too and the events_validate trigger''s first argument.';
    END IF;

    IF NEW.content_type = '' THEN
        NEW.content_type := 'application/json';
    END IF;
    -- JSON media types as the Go library reads them: application/json or any
    -- structured-syntax +json type, parameters ignored, case-insensitive.
    v_media := lower(regexp_replace(split_part(NEW.content_type, ';', 1), '^[[:space:]]+|[[:space:]]+$', '', 'g'));
    IF v_media = 'application/json' OR v_media LIKE '%+json' THEN
        -- The json type checks syntax only (jsonb would also refuse \u0000, which
        -- Go accepts); statement_too_complex is nesting past the server's stack.
        BEGIN
            PERFORM convert_from(NEW.payload, 'UTF8')::json;
        EXCEPTION WHEN invalid_text_representation OR character_not_in_repertoire OR untranslatable_character
                    OR statement_too_complex THEN
            GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
            RAISE EXCEPTION 'outbox: payload is not valid JSON, but content_type is %', quote_literal(NEW.content_type)
                USING ERRCODE = 'OB006', COLUMN = 'payload', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                      DETAIL = v_err || CASE WHEN v_detail <> '' THEN ': ' || v_detail ELSE '' END,
                      HINT = 'Send UTF-8 JSON text (convert_to(text, ''UTF8'') from SQL), or set content_type to the payload''s real type.';
        END;
    END IF;

    IF jsonb_typeof(NEW.headers) <> 'object' THEN
        RAISE EXCEPTION 'outbox: headers must be a JSON object of strings, got a JSON %', jsonb_typeof(NEW.headers)
            USING ERRCODE = 'OB010', COLUMN = 'headers', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                  HINT = 'Pass headers like ''{"traceparent": "00-...", "tenant": "acme"}''.';
    END IF;
    SELECT key INTO v_bad FROM jsonb_each(NEW.headers) WHERE jsonb_typeof(value) <> 'string' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'outbox: header % is not a string', quote_literal(v_bad)
            USING ERRCODE = 'OB010', COLUMN = 'headers', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                  HINT = 'Kafka headers are strings here: send every value as a JSON string.';
    END IF;
    -- A write starts a correlation when the request carried none (outbox/write.go).
    IF coalesce(NEW.headers->>'correlation_id', '') = '' THEN
        NEW.headers := NEW.headers || jsonb_build_object('correlation_id', NEW.event_id::text);
    END IF;
    SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0) INTO v_size FROM jsonb_each_text(NEW.headers);
    IF v_size > v_max_headers THEN
        RAISE EXCEPTION 'outbox: headers are % bytes (keys plus values), over the limit of % bytes', v_size, v_max_headers
            USING ERRCODE = 'OB007', COLUMN = 'headers', TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
                  HINT = 'Carry trace context and ids in headers, and the event''s facts in its payload.';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_validate BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_validate(1048576, 65536);

-- write_event inserts one event, as outbox.Writer.Write does, and returns its
-- id. NULL for an optional argument means its default. The events_validate
-- trigger checks it. This form takes the payload as bytes; the next one as text.
-- +goose StatementBegin
CREATE FUNCTION write_event(
    aggregate_type text,
    aggregate_id   text,
    event_type     text,
    payload        bytea,
    content_type   text        DEFAULT 'application/json',
    headers        jsonb       DEFAULT '{}',
    topic          text        DEFAULT '',
    kind           text        DEFAULT 'event',
    fanout_topics  text[]      DEFAULT '{}',
    occurred_at    timestamptz DEFAULT NULL,
    event_id       uuid        DEFAULT NULL
) RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path FROM CURRENT
AS $$
INSERT INTO events AS e (event_id, aggregate_type, aggregate_id, event_type, topic, fanout_topics, kind, content_type, payload, headers, occurred_at)
VALUES (
    coalesce(write_event.event_id, uuid7()),
    write_event.aggregate_type,
    write_event.aggregate_id,
    write_event.event_type,
    coalesce(write_event.topic, ''),
    coalesce(write_event.fanout_topics, '{}'),
    coalesce(write_event.kind, 'event'),
    coalesce(write_event.content_type, 'application/json'),
    write_event.payload,
    coalesce(write_event.headers, '{}'),
    coalesce(write_event.occurred_at, now()))
RETURNING e.event_id
$$;
-- +goose StatementEnd

-- write_event with the payload as text (JSON text, usually), stored as its UTF-8
-- bytes. A string parameter of unknown type (node-postgres, psycopg, psql)
-- resolves to this form; a bytea one to the form above.
-- +goose StatementBegin
CREATE FUNCTION write_event(
    aggregate_type text,
    aggregate_id   text,
    event_type     text,
    payload        text,
    content_type   text        DEFAULT 'application/json',
    headers        jsonb       DEFAULT '{}',
    topic          text        DEFAULT '',
    kind           text        DEFAULT 'event',
    fanout_topics  text[]      DEFAULT '{}',
    occurred_at    timestamptz DEFAULT NULL,
    event_id       uuid        DEFAULT NULL
) RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path FROM CURRENT
AS $$
SELECT write_event(write_event.aggregate_type, write_event.aggregate_id, write_event.event_type,
    convert_to(write_event.payload, 'UTF8'), write_event.content_type, write_event.headers, write_event.topic,
    write_event.kind, write_event.fanout_topics, write_event.occurred_at, write_event.event_id)
$$;
-- +goose StatementEnd

-- fingerprint is outbox.Fingerprint: the hex SHA-256 of the parts, each
-- prefixed by its length as 8 big-endian bytes, so ('ab', 'c') and ('a', 'bc')
-- differ. A NULL part counts as empty.
CREATE FUNCTION fingerprint(VARIADIC parts bytea[]) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
SELECT encode(sha256(coalesce(string_agg(int8send(octet_length(coalesce(p, ''::bytea))::bigint) || coalesce(p, ''::bytea), ''::bytea ORDER BY i), ''::bytea)), 'hex')
FROM unnest(parts) WITH ORDINALITY AS u(p, i)
$$;

-- fingerprint of text parts, taken as their UTF-8 bytes.
CREATE FUNCTION fingerprint(VARIADIC parts text[]) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
SELECT fingerprint(VARIADIC coalesce((SELECT array_agg(convert_to(coalesce(t, ''), 'UTF8') ORDER BY i) FROM unnest(parts) WITH ORDINALITY AS u(t, i)), '{}'::bytea[]))
$$;

-- claim_key is outbox.Writer.ClaimKey (and the ClaimKey query it runs): it
-- claims the key in the caller's transaction and returns outcome 'claimed' (do
-- the work, then complete_key before commit) or 'replay' with the stored
-- response of an earlier request with the same fingerprint (answer with it, do
-- nothing else). A key another transaction is working on raises OB101 at once,
-- without waiting; the same key with another fingerprint OB102; an empty or
-- too long key OB103. ttl is Config.KeyTTL. Run at READ COMMITTED. The
-- advisory lock is the Go library's, so Go and SQL writers share one key space.
-- +goose StatementBegin
CREATE FUNCTION claim_key(
    scope       text,
    idem_key    text,
    fingerprint text,
    ttl         interval DEFAULT '24 hours',
    OUT outcome          text,
    OUT response_code    integer,
    OUT response_headers jsonb,
    OUT response_body    bytea
)
LANGUAGE plpgsql VOLATILE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_scope   text := coalesce(claim_key.scope, '');
    v_key     text := claim_key.idem_key;
    v_fp      text := coalesce(claim_key.fingerprint, '');
    v_ttl     interval := claim_key.ttl;
    v_claimed boolean;
    v_row     idempotency_keys;
BEGIN
    IF v_key IS NULL OR v_key = '' OR octet_length(v_key) > 255 OR octet_length(v_scope) > 255 THEN
        RAISE EXCEPTION 'outbox: invalid idempotency key: the key must be 1 to 255 bytes and the scope at most 255'
            USING ERRCODE = 'OB103', HINT = 'Answer 400 Bad Request: the client sent an unusable Idempotency-Key.';
    END IF;
    IF v_ttl IS NULL OR v_ttl < interval '1 second' THEN
        RAISE EXCEPTION 'outbox: idempotency key ttl % is below one second', coalesce(v_ttl::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass how long the key is remembered, e.g. interval ''24 hours''.';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended(v_scope || E'\x1f' || v_key, 7)) THEN
        RAISE EXCEPTION 'outbox: idempotency key % is in flight', quote_literal(v_key)
            USING ERRCODE = 'OB101', DETAIL = 'Another transaction is processing a request with this key now.',
                  HINT = 'Roll back and answer 409 Conflict; the client retries later and gets the stored response.';
    END IF;
    INSERT INTO idempotency_keys AS k (scope, idem_key, fingerprint, created_at, expires_at)
    VALUES (v_scope, v_key, v_fp, now(), now() + v_ttl)
    ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint,
            status = 'started',
            response_code = NULL,
            response_headers = NULL,
            response_body = NULL,
            created_at = EXCLUDED.created_at,
            completed_at = NULL,
            expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= now()
    RETURNING true INTO v_claimed;
    IF v_claimed THEN
        outcome := 'claimed';
        RETURN;
    END IF;
    SELECT * INTO v_row FROM idempotency_keys AS k WHERE k.scope = v_scope AND k.idem_key = v_key;
    IF FOUND AND v_row.fingerprint <> v_fp THEN
        RAISE EXCEPTION 'outbox: idempotency key % was used before with a different request', quote_literal(v_key)
            USING ERRCODE = 'OB102', HINT = 'Roll back and answer 422 Unprocessable Content: a key names one request.';
    END IF;
    IF NOT FOUND OR v_row.status <> 'completed' OR v_row.response_code IS NULL THEN
        RAISE EXCEPTION 'outbox: idempotency key % is in flight', quote_literal(v_key)
            USING ERRCODE = 'OB101', DETAIL = 'Its first request committed without complete_key, or is committing now.',
                  HINT = 'Roll back and answer 409 Conflict; the client retries later.';
    END IF;
    outcome := 'replay';
    response_code := v_row.response_code;
    response_headers := v_row.response_headers;
    response_body := v_row.response_body;
END
$$;
-- +goose StatementEnd

-- complete_key is outbox.Writer.CompleteKey: it stores the response for a key
-- this transaction claimed, so that retries replay it once the transaction
-- commits. response_headers is an http.Header as JSON ({"Name": ["value"]}).
-- A key without a started claim raises OB104. This form takes the body as
-- bytes (empty by default); the next one as text.
-- +goose StatementBegin
CREATE FUNCTION complete_key(
    scope            text,
    idem_key         text,
    response_code    integer,
    response_body    bytea DEFAULT '',
    response_headers jsonb DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_scope   text := coalesce(complete_key.scope, '');
    v_key     text := complete_key.idem_key;
    v_code    integer := complete_key.response_code;
    v_body    bytea := coalesce(complete_key.response_body, '');
    v_headers jsonb := complete_key.response_headers;
BEGIN
    IF v_code IS NULL THEN
        RAISE EXCEPTION 'outbox: complete_key needs the response''s status code'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the HTTP status the first request was answered with, e.g. 201.';
    END IF;
    IF v_headers = '{}'::jsonb THEN
        v_headers := NULL;
    END IF;
    IF v_headers IS NOT NULL AND (jsonb_typeof(v_headers) <> 'object' OR EXISTS (
            SELECT 1 FROM jsonb_each(v_headers) AS h
            WHERE jsonb_typeof(h.value) <> 'array'
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(h.value) AS v WHERE jsonb_typeof(v) <> 'string'))) THEN
        RAISE EXCEPTION 'outbox: response_headers must map each header name to an array of strings'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass e.g. ''{"Content-Type": ["application/json"]}'' (Go''s http.Header).';
    END IF;
    UPDATE idempotency_keys AS k
    SET status = 'completed',
        response_code = v_code,
        response_headers = v_headers,
        response_body = v_body,
        completed_at = now()
    WHERE k.scope = v_scope AND k.idem_key = v_key AND k.status = 'started';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox: idempotency key % is not claimed in this transaction', coalesce(quote_literal(v_key), 'NULL')
            USING ERRCODE = 'OB104', HINT = 'Call claim_key first, in the same transaction, and complete the key only when its outcome was ''claimed''.';
    END IF;
END
$$;
-- +goose StatementEnd

-- complete_key with the body as text, stored as its UTF-8 bytes. The body has
-- no default here, so a call without one is the bytea form's.
-- +goose StatementBegin
CREATE FUNCTION complete_key(
    scope            text,
    idem_key         text,
    response_code    integer,
    response_body    text,
    response_headers jsonb DEFAULT NULL
) RETURNS void
LANGUAGE sql VOLATILE
SET search_path FROM CURRENT
AS $$
SELECT complete_key(complete_key.scope, complete_key.idem_key, complete_key.response_code,
    convert_to(complete_key.response_body, 'UTF8'), complete_key.response_headers)
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION complete_key(text, text, integer, text, jsonb);
DROP FUNCTION complete_key(text, text, integer, bytea, jsonb);
DROP FUNCTION claim_key(text, text, text, interval);
DROP FUNCTION fingerprint(text[]);
DROP FUNCTION fingerprint(bytea[]);
DROP FUNCTION write_event(text, text, text, text, text, jsonb, text, text, text[], timestamptz, uuid);
DROP FUNCTION write_event(text, text, text, bytea, text, jsonb, text, text, text[], timestamptz, uuid);
DROP TRIGGER events_validate ON events;
DROP FUNCTION events_validate();
ALTER TABLE events ALTER COLUMN event_id DROP DEFAULT;
DROP FUNCTION uuid7();
