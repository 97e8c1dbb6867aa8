-- Users with several events keep pointers to their events, not copies of them (SPEC §8, §9).
--
-- Since 0003 every event of a user with several events was copied, with all its demographic
-- columns, into `repeat_user_events` under three indexes (eventId; source and time; source,
-- user and time). With 30 % returning users that was half the events: ~200 bytes per stored
-- event on disk and the largest insert of the demographics trigger. What still needs a path
-- from a user to their events is small:
-- * a removal (an earliest-copy replacement, retention) recounts a user's hour from their
--   other events in that hour, and finds the one event left of a user going back to one;
-- * the reporter's ragged edges need, per event in an edge, whether its user has several
--   events: that user has hour rows (0007), one probe of their primary key.
-- So the copies become `(source, user_id, event_time, event_key)`, one B-tree, and the event
-- itself is read through its key when a removal needs its columns. The hour rows of entering
-- events are also found with half the index probes (at the end of this file).

CREATE TABLE repeat_user_copies (
    event_time  timestamptz NOT NULL,
    event_key   uuid NOT NULL,
    source      text NOT NULL,
    user_id     text COLLATE "C" NOT NULL,
    PRIMARY KEY (source, user_id, event_time, event_key)
);
INSERT INTO repeat_user_copies
SELECT c.event_time, adfunnel_event_key(c.event_id), c.source, c.user_id
FROM repeat_user_events c ORDER BY c.source, c.user_id, c.event_time;
DROP TABLE repeat_user_events;

-- 0016's step 2 of adding rows: the entering events' pointers instead of their copies.
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
    ' entering AS (SELECT %3$s FROM entering_rows e),'
    ' copies AS (INSERT INTO repeat_user_copies'
    '  SELECT event_time, event_key, source, user_id FROM entering_rows'
    '  ORDER BY source, user_id, event_time ON CONFLICT DO NOTHING),'
    '%5$s,'
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

-- 0012's step 2 of removing rows: the one event left of a user going back to one, and the
-- events of a recounted hour, are read through their pointers.
CREATE OR REPLACE FUNCTION adfunnel_apply_removed(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH touched AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],'
    '  $4::bigint[]) AS t (source, user_id, before, after)),'
    ' removed AS MATERIALIZED (SELECT %2$s, t.before, r.event_key FROM %1$s r JOIN touched t'
    '  ON (t.source, t.user_id) = (r.source, r.user_id)),'
    ' back_rows AS MATERIALIZED (SELECT c.event_time AS copy_time, e.event_key, %3$s'
    '  FROM touched t JOIN repeat_user_copies c ON (c.source, c.user_id) = (t.source, t.user_id)'
    '  JOIN events e ON e.event_key = c.event_key'
    '  WHERE t.before >= 2 AND t.after = 1 AND c.event_key NOT IN (SELECT event_key FROM %1$s)),'
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

-- 0007's rebuild of the touched users' hour rows: an hour that lost an event is recounted
-- from the user's other events in it, found by pointer and read by key.
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
 recounted AS (
    SELECT DISTINCT ON (s.track, s.user_id, s.hour) s.track, s.hour, %1$s
    FROM struck s JOIN repeat_user_copies c
        ON c.source = s.source AND c.user_id = s.user_id
        AND c.event_time >= s.hour AND c.event_time < s.hour + interval '1 hour'
    JOIN events e ON e.event_key = c.event_key
    WHERE (s.track <> 'p' OR e.funnel_stage = 'top')
        AND c.event_key NOT IN (SELECT event_key FROM removed)
    ORDER BY s.track, s.user_id, s.hour, e.event_time DESC, e.received_at DESC,
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

-- 0007's hour rows of entering events, with half the probes: one probe per candidate finds
-- the user's hour row at or before it, which is either the candidate's own row (it exists)
-- or the row of the hour before it (to relink); only a new hour probes again, for the hour
-- after it. Until now each candidate was probed for its own row, the hour before and the
-- hour after, and the rows found were then read by a fourth probe.
CREATE OR REPLACE FUNCTION adfunnel_hours_added() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format($q$
 candidates AS MATERIALIZED (
    SELECT DISTINCT ON (track, user_id, hour) * FROM (%1$s) t
    ORDER BY track, user_id, hour, event_time DESC, received_at DESC, event_id DESC),
 held AS MATERIALIZED (
    SELECT c.track, c.user_id, c.hour, p.h
    FROM candidates c
    LEFT JOIN LATERAL (SELECT h FROM repeat_user_hours h
        WHERE h.track = c.track AND h.user_id = c.user_id AND h.hour <= c.hour
        ORDER BY h.hour DESC LIMIT 1) p ON true),
 fresh AS MATERIALIZED (
    SELECT d.track, d.user_id, d.hour, (d.h).hour AS prev_hour,
           coalesce((SELECT h.hour FROM repeat_user_hours h
               WHERE h.track = d.track AND h.user_id = d.user_id AND h.hour > d.hour
               ORDER BY h.hour LIMIT 1), 'infinity') AS next_held
    FROM held d WHERE (d.h).hour IS DISTINCT FROM d.hour),
 relinked AS MATERIALIZED (
    SELECT track, user_id, prev_hour AS hour, min(hour) AS next_hour
    FROM fresh WHERE prev_hour IS NOT NULL GROUP BY 1, 2, 3),
 hours_before AS MATERIALIZED (
    SELECT DISTINCT ON ((h).track, (h).user_id, (h).hour) (h).* FROM held
    WHERE (h).hour IS NOT NULL),
 winners AS (
    SELECT DISTINCT ON (track, user_id, hour) * FROM (
        SELECT track, hour, %2$s FROM hours_before b
        UNION ALL SELECT track, hour, %3$s FROM candidates c) x
    ORDER BY track, user_id, hour, event_time DESC, received_at DESC, event_id DESC),
 fresh_next AS (
    SELECT track, user_id, hour, least(next_held, coalesce(lead(hour)
        OVER (PARTITION BY track, user_id ORDER BY hour), 'infinity')) AS next_hour
    FROM fresh),
 hours_after AS MATERIALIZED (
    SELECT w.track, w.hour, coalesce(r.next_hour, b.next_hour, f.next_hour), %4$s
    FROM winners w
    LEFT JOIN hours_before b ON (b.track, b.user_id, b.hour) = (w.track, w.user_id, w.hour)
    LEFT JOIN relinked r ON (r.track, r.user_id, r.hour) = (w.track, w.user_id, w.hour)
    LEFT JOIN fresh_next f ON (f.track, f.user_id, f.hour) = (w.track, w.user_id, w.hour)),
%5$s%6$s$q$,
    adfunnel_tracked('entering'),
    adfunnel_demographic_columns('b'),
    adfunnel_demographic_columns('c'),
    adfunnel_demographic_columns('w'),
    adfunnel_hour_upsert(),
    adfunnel_hour_rollups())
$$;
