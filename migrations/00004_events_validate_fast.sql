-- events_validate, faster: the same checks, defaults, errors and hints as
-- 00003_sql_writer.sql, in the same order, with a fast path in front.
--
-- 00003's function runs some thirty expressions and two queries over the
-- headers for every inserted event, and plpgsql prepares each expression again
-- in every transaction: in a one-event order transaction the trigger was the
-- largest part of the event's insert (125 µs of execution with it, 75 µs with
-- this one; docs/writer.md, "Cost"). Now one expression decides whether a row
-- has the common shape (what the Go writer sends: names that start with a
-- printable ASCII character, a UUIDv7, a set kind, no or a plain topic, no
-- fan-out, a payload within the limit, content type exactly application/json,
-- headers that are an object of strings with a correlation id and whose JSON
-- text is within the limit); such a row passes every 00003 check unchanged but
-- the JSON one, so only that runs. Every other row, and any row with a NULL,
-- takes 00003's checks one by one, so what is accepted, refused and filled in
-- is as before (outbox/sqlwriter_fastpath_test.go compares the two functions).
--
-- The trigger and its arguments (the payload and header limits) stay as they
-- are: CREATE OR REPLACE FUNCTION keeps every partition's trigger. Objects are
-- created unqualified, in the first schema of search_path, like 00001_outbox.sql.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION events_validate() RETURNS trigger
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
    v_fast        boolean;
BEGIN
    -- The fast path: one expression that holds for the rows the Go writer
    -- sends (and most others): non-blank names that start with a printable
    -- ASCII character, a UUIDv7, a set kind, no or a plain topic, no fan-out,
    -- a payload within the limit, content type exactly application/json, and
    -- headers that are an object of strings with a correlation id whose JSON
    -- text alone is within the limit (keys plus values are never longer). Such
    -- a row passes every check below unchanged but the JSON one, so only that
    -- runs. Any other row (or a NULL anywhere) takes the checks one by one.
    v_fast := coalesce(
        ascii(NEW.aggregate_type) BETWEEN 33 AND 126
        AND ascii(NEW.aggregate_id) BETWEEN 33 AND 126
        AND ascii(NEW.event_type) BETWEEN 33 AND 126
        AND get_byte(uuid_send(NEW.event_id), 6) >> 4 = 7
        AND NEW.kind IN ('event', 'record')
        AND (NEW.topic = '' OR (NEW.topic ~ '^[a-zA-Z0-9._-]+$' AND length(NEW.topic) <= 249 AND NEW.topic NOT IN ('.', '..')))
        AND cardinality(NEW.fanout_topics) = 0
        AND octet_length(NEW.payload) <= v_max_payload
        AND NEW.content_type = 'application/json'
        AND jsonb_typeof(NEW.headers) = 'object'
        AND coalesce(NEW.headers->>'correlation_id', '') <> ''
        AND octet_length(NEW.headers::text) <= v_max_headers
        AND NOT jsonb_path_exists(NEW.headers, 'strict $.* ? (@.type() != "string")'),
        false);
    IF v_fast THEN
        v_media := 'application/json';
    ELSE
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
    END IF;
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

    IF NOT v_fast THEN
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
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- The function of 00003_sql_writer.sql, as it was.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION events_validate() RETURNS trigger
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
