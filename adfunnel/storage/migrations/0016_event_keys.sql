-- Events unique on a 16-byte key of their eventId, in a row laid out without padding
-- (SPEC §9).
--
-- * The primary key on the eventId text was the largest index: ~82 bytes per event, a
--   40-byte id in every entry of a B-tree that random ids fill to two thirds. The key is the
--   first half of the eventId's SHA-256 (`adfunnel_event_key`), a `uuid`: ~42 bytes per
--   event in its index, 16 in the row. The gateway computes it with each COPY line, so
--   PostgreSQL only parses it. The eventId stays in the row for every reader, and the
--   earliest-copy update also compares it, so two ids sharing a key (a 128-bit collision)
--   would be counted a duplicate, never merged. Lookups by eventId go through the key.
-- * Fixed-width columns first, widest first: a column aligned to 8 bytes after text of any
--   length cost on average 3.5 bytes of padding, and there were three.
--
-- The table is rewritten once, here, in the migration's transaction: on a large table this
-- takes minutes and holds writers off until it commits (docs/operations.md).

-- As the gateway computes it (`storage.event_key`).
CREATE FUNCTION adfunnel_event_key(event_id text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT encode(substring(sha256(convert_to(event_id, 'UTF8')) FROM 1 FOR 16), 'hex')::uuid
$$;

CREATE TABLE events_keyed (
    event_time       timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    stream_seq       bigint,
    followers        bigint,
    age              integer,
    event_key        uuid NOT NULL,
    event_id         text COLLATE "C" NOT NULL,
    source           text NOT NULL,
    funnel_stage     text NOT NULL,
    event_type       text NOT NULL,
    user_id          text COLLATE "C" NOT NULL,
    purchase_amount  numeric,
    campaign_id      text,
    gender           text,
    country          text,
    city             text,
    device           text,
    payload          bytea,
    -- Kept for rows stored before migrations 0011 and 0015.
    payload_json     json,
    correlation_id   text,
    correlation_uuid uuid,
    stored_at        timestamptz
);
INSERT INTO events_keyed
SELECT event_time, received_at, stream_seq, followers, age, adfunnel_event_key(event_id),
       event_id, source, funnel_stage, event_type, user_id, purchase_amount, campaign_id,
       gender, country, city, device, payload, payload_json, correlation_id, correlation_uuid,
       stored_at
FROM events;

DROP VIEW event_traces;
DROP TABLE events;
ALTER TABLE events_keyed RENAME TO events;
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (event_key);
ALTER TABLE events ADD CONSTRAINT events_payload_kept
    CHECK (payload IS NOT NULL OR payload_json IS NOT NULL);
CREATE INDEX events_time_idx ON events (event_time);
CREATE INDEX events_tiktok_followers_idx ON events (followers, event_time)
    WHERE source = 'tiktok';
CREATE INDEX events_user_idx ON events USING hash (user_id) WITH (fillfactor = 100);

CREATE TRIGGER events_rollup_insert AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_rollups();
CREATE TRIGGER events_rollup_update AFTER UPDATE ON events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_rollups();
CREATE TRIGGER events_rollup_delete AFTER DELETE ON events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_rollups();
CREATE TRIGGER events_demographics_insert AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_demographics();
CREATE TRIGGER events_demographics_update AFTER UPDATE ON events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_demographics();
CREATE TRIGGER events_demographics_delete AFTER DELETE ON events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_demographics();

-- 0015's view, on the new table.
CREATE VIEW event_traces AS
SELECT e.event_id, e.event_key, e.event_time, e.source, e.funnel_stage, e.event_type,
       e.user_id, e.purchase_amount, e.campaign_id, e.age, e.gender, e.country, e.city,
       e.followers, e.device, e.payload, e.payload_json, e.received_at, e.stream_seq,
       coalesce(d.correlation_uuid::text, d.correlation_id,
                e.correlation_uuid::text, e.correlation_id) AS correlation_id,
       coalesce(d.stored_at, e.stored_at) AS stored_at
FROM events e
LEFT JOIN deliveries d
    ON d.received_at = e.received_at AND d.stream_seq IS NOT DISTINCT FROM e.stream_seq;

-- 0012's mark of the rows one command wrote, found through the key.
CREATE OR REPLACE FUNCTION adfunnel_written_by(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    '(SELECT e.xmin::text AS x, e.cmin::text AS c FROM events e'
    ' WHERE e.event_key = (SELECT event_key FROM %s LIMIT 1))', rel)
$$;

-- 0007's step 2 of adding rows, finding a user's one earlier event through the key.
CREATE OR REPLACE FUNCTION adfunnel_apply_added(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH multi AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],'
    '  $4::text[]) AS m (source, user_id, before, first_event_id)),'
    ' moved AS MATERIALIZED (SELECT %3$s FROM multi m JOIN events e'
    '  ON e.event_key = adfunnel_event_key(m.first_event_id)'
    '  AND e.event_id = m.first_event_id WHERE m.before = 1),'
    ' entering AS MATERIALIZED (SELECT %2$s FROM %1$s r'
    '  WHERE (r.source, r.user_id) IN (SELECT source, user_id FROM multi)'
    '  UNION ALL SELECT * FROM moved),'
    ' copies AS (INSERT INTO repeat_user_events AS c SELECT * FROM entering'
    '  ON CONFLICT (event_id) DO UPDATE SET (%4$s) = ROW(%5$s)),'
    '%7$s,'
    ' single AS (SELECT %2$s, 1 AS sign FROM %1$s r'
    '  WHERE (r.source, r.user_id) NOT IN (SELECT source, user_id FROM multi)'
    '  UNION ALL SELECT *, -1 FROM moved),'
    '%6$s',
    rel,
    adfunnel_demographic_columns('r'),
    adfunnel_demographic_columns('e'),
    replace(adfunnel_demographic_columns('c'), 'c.', ''),
    adfunnel_demographic_columns('excluded'),
    adfunnel_single_rollups(),
    adfunnel_hours_added())
$$;
