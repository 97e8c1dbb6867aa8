-- Pointers only for the events an hour row does not name (SPEC §8, §9).
--
-- Since 0017 every event of a user with several events had a pointer, and each user-hour also
-- has an hour row naming its latest event (per track: 'f' for Facebook, 't' for all of a
-- TikTok user's events). A removal, the only reader of pointers, needs every event of a
-- struck hour, or the one event left of a user going back to one; the latest of each hour is
-- in its hour row already. So an event of a user with several now has a pointer exactly when
-- it is not the latest of its user-hour on its source's track: an entering event that does
-- not win its hour gets one, an hour row's event gets one when a later event takes its place,
-- and an event that becomes its hour's latest again when a later one is removed loses its
-- own. Readers take the union of pointers and hour rows. With returning users most
-- user-hours hold two or three events: 45 % fewer pointers.
--
-- The pointers of the events hour rows name are removed here, once: one probe of the
-- pointers' key per hour row of the source tracks (seconds for a few million hour rows).

-- `adfunnel_event_key` (0016) was declared IMMUTABLE over `convert_to`, which is STABLE, so
-- the planner never inlined it: each call ran its body as a query of its own (~4 us against
-- ~1.7 inlined, 200,000 calls in one statement). STABLE is what its body is, and nothing
-- needs it immutable (no index or generated column uses it).
ALTER FUNCTION adfunnel_event_key(text) STABLE;

DELETE FROM repeat_user_copies c USING repeat_user_hours h
WHERE h.track <> 'p'
    AND (c.source, c.user_id, c.event_time, c.event_key)
        = (CASE h.track WHEN 'f' THEN 'facebook' ELSE 'tiktok' END, h.user_id, h.event_time,
           adfunnel_event_key(h.event_id));

-- 0018's step 2 of adding rows: pointers after the hour rows, for the events that did not win
-- their user-hour, and for a stored latest event a batch event displaced (it had none).
CREATE OR REPLACE FUNCTION adfunnel_apply_added(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH multi AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],'
    '  $4::text[]) AS m (source, user_id, before, first_event_id)),'
    ' moved_rows AS MATERIALIZED (SELECT e.event_key, %3$s FROM multi m JOIN events e'
    '  ON e.event_key = adfunnel_event_key(m.first_event_id)'
    '  AND e.event_id = m.first_event_id WHERE m.before = 1),'
    ' moved AS (SELECT %3$s FROM moved_rows e),'
    ' entering_rows AS MATERIALIZED (SELECT r.event_key, %2$s FROM %1$s r'
    '  WHERE (r.source, r.user_id) IN (SELECT source, user_id FROM multi)'
    '  UNION ALL SELECT * FROM moved_rows),'
    '%5$s,'
    ' won AS MATERIALIZED (SELECT d.event_id, d.own, d.h FROM held d'
    '  WHERE d.track <> ''p'' AND (NOT d.own'
    '  OR ROW(d.event_time, d.received_at, d.event_id)'
    '   > ROW((d.h).event_time, (d.h).received_at, (d.h).event_id))),'
    ' copies AS (INSERT INTO repeat_user_copies'
    '  SELECT event_time, event_key, source, user_id FROM entering_rows'
    '  WHERE event_id NOT IN (SELECT event_id FROM won)'
    '  ORDER BY source, user_id, event_time),'
    ' displaced AS (INSERT INTO repeat_user_copies'
    '  SELECT (d.h).event_time, adfunnel_event_key((d.h).event_id), (d.h).source, (d.h).user_id'
    '  FROM won d WHERE d.own ORDER BY 3, 4, 1),'
    ' single AS (SELECT %2$s, 1 AS sign FROM %1$s r'
    '  WHERE (r.source, r.user_id) NOT IN (SELECT source, user_id FROM multi)'
    '  UNION ALL SELECT *, -1 FROM moved),'
    '%4$s',
    rel,
    adfunnel_demographic_columns('r'),
    adfunnel_demographic_columns('e'),
    adfunnel_single_rollups(),
    adfunnel_hours_added())
$$;

-- 0017's step 2 of removing rows: the one event left of a user going back to one is among
-- their pointers and their hour rows' events.
CREATE OR REPLACE FUNCTION adfunnel_apply_removed(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH touched AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],'
    '  $4::bigint[]) AS t (source, user_id, before, after)),'
    ' removed AS MATERIALIZED (SELECT %2$s, t.before, r.event_key FROM %1$s r JOIN touched t'
    '  ON (t.source, t.user_id) = (r.source, r.user_id)),'
    ' left_keys AS (SELECT c.event_key, NULL::text AS event_id FROM touched t'
    '  JOIN repeat_user_copies c ON (c.source, c.user_id) = (t.source, t.user_id)'
    '  WHERE t.before >= 2 AND t.after = 1'
    '  UNION ALL SELECT adfunnel_event_key(h.event_id), h.event_id FROM touched t'
    '  JOIN repeat_user_hours h ON h.user_id = t.user_id'
    '  AND h.track = CASE WHEN t.source = ''facebook'' THEN ''f'' ELSE ''t'' END'
    '  WHERE t.before >= 2 AND t.after = 1),'
    ' back_rows AS MATERIALIZED (SELECT DISTINCT ON (e.event_key) e.event_time AS copy_time,'
    '  e.event_key, %3$s FROM left_keys k JOIN events e ON e.event_key = k.event_key'
    '  WHERE (k.event_id IS NULL OR e.event_id = k.event_id)'
    '  AND e.event_key NOT IN (SELECT event_key FROM %1$s) ORDER BY e.event_key),'
    ' back AS (SELECT %3$s FROM back_rows e),'
    ' uncopied AS (DELETE FROM repeat_user_copies c USING'
    '  (SELECT source, user_id, event_time, event_key FROM removed WHERE before >= 2'
    '   UNION ALL SELECT source, user_id, copy_time, event_key FROM back_rows) x'
    '  WHERE (c.source, c.user_id, c.event_time, c.event_key)'
    '   = (x.source, x.user_id, x.event_time, x.event_key)),'
    '%6$s,'
    ' single AS (SELECT %4$s, -1 AS sign FROM removed d WHERE before = 1'
    '  UNION ALL SELECT *, 1 FROM back),'
    '%5$s',
    rel,
    adfunnel_demographic_columns('r'),
    adfunnel_demographic_columns('e'),
    adfunnel_demographic_columns('d'),
    adfunnel_single_rollups(),
    adfunnel_hours_removed())
$$;

-- 0017's rebuild of the touched users' hour rows: a struck hour is recounted from its
-- pointers and the event its source's hour row names, and the new latest loses its pointer.
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
    SELECT s.track, s.user_id, s.hour, c.event_key, NULL::text AS event_id
    FROM struck s JOIN repeat_user_copies c
        ON c.source = s.source AND c.user_id = s.user_id
        AND c.event_time >= s.hour AND c.event_time < s.hour + interval '1 hour'
    UNION ALL
    SELECT s.track, s.user_id, s.hour, adfunnel_event_key(b.event_id), b.event_id
    FROM struck s JOIN hours_before b
        ON b.track = CASE WHEN s.source = 'facebook' THEN 'f' ELSE 't' END
        AND b.user_id = s.user_id AND b.hour = s.hour),
 recounted AS (
    SELECT DISTINCT ON (k.track, k.user_id, k.hour) k.track, k.hour, %1$s
    FROM struck_keys k JOIN events e ON e.event_key = k.event_key
    WHERE (k.event_id IS NULL OR e.event_id = k.event_id)
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
    DELETE FROM repeat_user_copies c USING recounted r
    WHERE r.track <> 'p'
        AND (c.source, c.user_id, c.event_time, c.event_key)
            = (r.source, r.user_id, r.event_time, adfunnel_event_key(r.event_id))),
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
