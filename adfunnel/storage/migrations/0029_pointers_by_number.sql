-- Pointers keyed by numbers: the user id's hash and the hour (SPEC §8, §9).
--
-- A pointer (0017, 0023) was keyed by `(source, user_id, event_time, event_key)`: two texts,
-- the source compared in the database's collation, in a B-tree entry of ~60 bytes and a row
-- of ~72. Its readers ask for one user's pointers in one hour (a struck hour's recount) or
-- all of them (a user going back to one event), and a removal deletes one by its event. So
-- the key is now `(hashtext(user_id), hour number, event_key)`: three fixed-width columns,
-- 24 bytes, compared as integers. Users whose ids share a hash, and a Facebook and a TikTok
-- user with the same id, share their pointers' ranges: every reader joins the events the
-- pointers name and keeps those of its own source and user. The event key stays unique, so
-- a removal still deletes exactly its event's pointer.
--
-- The stored pointers are converted here, in the migration's transaction (one pass over the
-- table, docs/operations.md).

-- An instant's hour as a number, hours since 1970 in UTC: the hour `date_trunc('hour', t AT
-- TIME ZONE 'UTC')` names. Through an interval, not `date_part` of the instant, which
-- PostgreSQL declares STABLE: an IMMUTABLE body is inlined into each statement.
CREATE FUNCTION adfunnel_hour_number(t timestamptz) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT floor(date_part('epoch', t - timestamptz '1970-01-01 00:00:00+00') / 3600)::integer
$$;

CREATE TABLE repeat_user_pointers (
    user_hash   integer NOT NULL,
    hour_number integer NOT NULL,
    event_key   uuid NOT NULL,
    PRIMARY KEY (user_hash, hour_number, event_key)
);
INSERT INTO repeat_user_pointers
SELECT hashtext(user_id), adfunnel_hour_number(event_time), event_key FROM repeat_user_copies
ORDER BY 1, 2, 3;
DROP TABLE repeat_user_copies;

-- 0026's step 2 of adding rows, writing the new pointers.
CREATE OR REPLACE FUNCTION adfunnel_apply_added(rel text, others boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH multi AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],'
    '  $4::text[]) AS m (source, user_id, before, state)),'
    ' own AS MATERIALIZED %7$s,'
    ' stored_rows AS MATERIALIZED (SELECT e.event_key, %3$s, m.state FROM multi m'
    '  CROSS JOIN LATERAL %8$s e WHERE m.state <> ''h'' AND m.before >= 1),'
    ' entering_rows AS MATERIALIZED (SELECT r.event_key, %2$s FROM %1$s r'
    '  WHERE (r.source, r.user_id) IN (SELECT source, user_id FROM multi WHERE state <> ''s'')'
    '  UNION ALL SELECT e.event_key, %3$s FROM stored_rows e WHERE e.state = ''m''),'
    ' one_hour AS MATERIALIZED (SELECT %3$s, -1 AS sign FROM stored_rows e'
    '  UNION ALL SELECT %3$s, 1 FROM stored_rows e WHERE e.state = ''s'''
    '  UNION ALL SELECT %2$s, 1 FROM %1$s r'
    '  WHERE (r.source, r.user_id) IN (SELECT source, user_id FROM multi WHERE state = ''s'')),'
    '%5$s,'
    ' won AS MATERIALIZED (SELECT d.event_id, d.own, d.h FROM held d'
    '  WHERE d.track <> ''p'' AND (NOT d.own'
    '  OR ROW(d.event_time, d.received_at, d.event_id)'
    '   > ROW((d.h).event_time, (d.h).received_at, (d.h).event_id))),'
    ' copies AS (INSERT INTO repeat_user_pointers'
    '  SELECT hashtext(user_id), adfunnel_hour_number(event_time), event_key FROM entering_rows'
    '  WHERE event_id NOT IN (SELECT event_id FROM won) ORDER BY 1, 2, 3),'
    ' displaced AS (INSERT INTO repeat_user_pointers'
    '  SELECT hashtext((d.h).user_id), adfunnel_hour_number((d.h).event_time),'
    '  adfunnel_event_key((d.h).event_id) FROM won d WHERE d.own ORDER BY 1, 2, 3),'
    ' single AS (SELECT %2$s, 1 AS sign FROM %1$s r'
    '  WHERE (r.source, r.user_id) NOT IN (SELECT source, user_id FROM multi)'
    '  UNION ALL %6$s),'
    '%4$s',
    rel,
    adfunnel_demographic_columns('r'),
    adfunnel_demographic_columns('e'),
    adfunnel_single_rollups(),
    adfunnel_hours_added(),
    adfunnel_one_hour_latest('one_hour'),
    adfunnel_written_by(rel),
    adfunnel_stored_events('m', rel, others))
$$;

-- 0026's step 2 of removing rows: a user going back to one event finds their pointers by
-- the hash and keeps their own events.
CREATE OR REPLACE FUNCTION adfunnel_apply_removed(rel text, kept text, others boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH touched AS MATERIALIZED (SELECT t.*, t.before >= 2 AND EXISTS (SELECT 1'
    '  FROM repeat_user_hours h WHERE h.user_id = t.user_id'
    '  AND h.track = CASE t.source WHEN ''facebook'' THEN ''f'' ELSE ''t'' END) AS several'
    '  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])'
    '  AS t (source, user_id, before, after)),'
    ' own AS MATERIALIZED %7$s,'
    ' removed AS MATERIALIZED (SELECT %2$s, t.several, r.event_key FROM %1$s r JOIN touched t'
    '  ON (t.source, t.user_id) = (r.source, r.user_id)),'
    ' rest AS MATERIALIZED (SELECT %3$s FROM touched t CROSS JOIN LATERAL %8$s e'
    '  WHERE NOT t.several AND t.after >= 1),'
    ' left_keys AS (SELECT t.source, t.user_id, c.event_key, NULL::text AS event_id'
    '  FROM touched t JOIN repeat_user_pointers c ON c.user_hash = hashtext(t.user_id)'
    '  WHERE t.several AND t.after = 1'
    '  UNION ALL SELECT t.source, t.user_id, adfunnel_event_key(h.event_id), h.event_id'
    '  FROM touched t'
    '  JOIN repeat_user_hours h ON h.user_id = t.user_id'
    '  AND h.track = CASE WHEN t.source = ''facebook'' THEN ''f'' ELSE ''t'' END'
    '  WHERE t.several AND t.after = 1),'
    ' back_rows AS MATERIALIZED (SELECT DISTINCT ON (e.event_key) e.event_time AS copy_time,'
    '  e.event_key, %3$s FROM left_keys k JOIN events e ON e.event_key = k.event_key'
    '  WHERE (k.event_id IS NULL OR e.event_id = k.event_id)'
    '  AND (e.source, e.user_id) = (k.source, k.user_id)'
    '  AND e.event_key NOT IN (SELECT event_key FROM %1$s) ORDER BY e.event_key),'
    ' back AS (SELECT %3$s FROM back_rows e),'
    ' uncopied AS (DELETE FROM repeat_user_pointers c USING'
    '  (SELECT user_id, event_time, event_key FROM removed WHERE several'
    '   UNION ALL SELECT user_id, copy_time, event_key FROM back_rows) x'
    '  WHERE (c.user_hash, c.hour_number, c.event_key)'
    '   = (hashtext(x.user_id), adfunnel_hour_number(x.event_time), x.event_key)),'
    '%6$s,'
    ' one_hour AS MATERIALIZED (SELECT %4$s, -1 AS sign FROM removed d WHERE NOT d.several'
    '  UNION ALL SELECT *, -1 FROM rest UNION ALL SELECT *, 1 FROM rest),'
    ' single AS (%9$s UNION ALL SELECT *, 1 FROM back),'
    '%5$s',
    rel,
    adfunnel_demographic_columns('r'),
    adfunnel_demographic_columns('e'),
    adfunnel_demographic_columns('d'),
    adfunnel_single_rollups(),
    adfunnel_hours_removed(),
    adfunnel_written_by(kept),
    adfunnel_stored_events('t', kept, others),
    adfunnel_one_hour_latest('one_hour'))
$$;

-- 0023's rebuild of struck hours: a struck hour's pointers by the hash and the hour number,
-- its events those of the user and source.
CREATE OR REPLACE FUNCTION adfunnel_hours_removed() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format($q$
 hour_users AS MATERIALIZED (
    SELECT t.source, t.user_id, t.after, k.track FROM touched t
    CROSS JOIN LATERAL (VALUES (CASE WHEN t.source = 'facebook' THEN 'f' ELSE 't' END),
                               (CASE WHEN t.source = 'tiktok' THEN 'p' END)) k (track)
    WHERE t.before >= 2 AND k.track IS NOT NULL),
 hours_before AS MATERIALIZED (
    SELECT h.* FROM hour_users u JOIN repeat_user_hours h
        ON (h.track, h.user_id) = (u.track, u.user_id)),
 struck AS MATERIALIZED (
    SELECT DISTINCT u.track, u.source, r.user_id,
           date_trunc('hour', r.event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour
    FROM removed r JOIN hour_users u ON (u.source, u.user_id) = (r.source, r.user_id)
    WHERE u.after >= 2 AND (u.track <> 'p' OR r.funnel_stage = 'top')),
 struck_keys AS (
    SELECT s.track, s.source, s.user_id, s.hour, c.event_key, NULL::text AS event_id
    FROM struck s JOIN repeat_user_pointers c
        ON c.user_hash = hashtext(s.user_id) AND c.hour_number = adfunnel_hour_number(s.hour)
    UNION ALL
    SELECT s.track, s.source, s.user_id, s.hour, adfunnel_event_key(b.event_id), b.event_id
    FROM struck s JOIN hours_before b
        ON b.track = CASE WHEN s.source = 'facebook' THEN 'f' ELSE 't' END
        AND b.user_id = s.user_id AND b.hour = s.hour),
 recounted AS (
    SELECT DISTINCT ON (k.track, k.user_id, k.hour) k.track, k.hour, %1$s
    FROM struck_keys k JOIN events e ON e.event_key = k.event_key
    WHERE (k.event_id IS NULL OR e.event_id = k.event_id)
        AND (e.source, e.user_id) = (k.source, k.user_id)
        AND (k.track <> 'p' OR e.funnel_stage = 'top')
        AND k.event_key NOT IN (SELECT event_key FROM removed)
    ORDER BY k.track, k.user_id, k.hour, e.event_time DESC, e.received_at DESC,
             e.event_id DESC),
 kept AS (
    SELECT b.track, b.hour, %2$s FROM hours_before b JOIN hour_users u
        ON (u.track, u.user_id) = (b.track, b.user_id)
    WHERE u.after >= 2
        AND (b.track, b.user_id, b.hour) NOT IN (SELECT track, user_id, hour FROM struck)
    UNION ALL SELECT * FROM recounted),
 hours_after AS MATERIALIZED (
    SELECT track, hour, coalesce(lead(hour) OVER (PARTITION BY track, user_id ORDER BY hour),
           'infinity'), %3$s
    FROM kept k),
 -- A recounted hour's new latest event is named by its hour row from now on.
 repointed AS (
    DELETE FROM repeat_user_pointers c USING recounted r
    WHERE r.track <> 'p'
        AND (c.user_hash, c.hour_number, c.event_key)
            = (hashtext(r.user_id), adfunnel_hour_number(r.event_time),
               adfunnel_event_key(r.event_id))),
 hours_gone AS (
    DELETE FROM repeat_user_hours h USING hours_before b
    WHERE (h.track, h.user_id, h.hour) = (b.track, b.user_id, b.hour)
        AND (b.track, b.user_id, b.hour) NOT IN (SELECT track, user_id, hour FROM hours_after)),
%4$s%5$s$q$,
    adfunnel_demographic_columns('e'),
    adfunnel_demographic_columns('b'),
    adfunnel_demographic_columns('k'),
    adfunnel_hour_upsert(),
    adfunnel_hour_rollups())
$$;
