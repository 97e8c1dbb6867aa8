-- Users whose events all fall in one hour count like users with one event (SPEC §4, §8).
--
-- Until now every user with two or more events of a source had hour rows, and each of their
-- events that was not the latest of its hour a pointer. With returning users that was most
-- of what a batch wrote beyond its events: a returning user comes back within seconds, and
-- in a 16,000-event batch 3,754 of the 3,937 users with several events had nothing stored
-- before it (docs/performance.md). Yet such a user is counted exactly like a single user: in
-- a range of whole hours they are in it when their one hour is, by their latest event of
-- that hour on each track, and at a ragged edge by their latest event there.
--
-- So a user without hour rows now has at most `adfunnel_one_hour_limit()` events, all in
-- one hour, and counts in the single users' rollups by the latest event of that hour (a
-- TikTok user's device and country by the latest top-funnel one). A user gets hour rows when
-- their events come to span two hours or pass the limit, and keeps them while they have two
-- or more events, as before; a user with hour rows never leaves them for this model. The
-- limit bounds what the reports and a removal read of a user without hour rows.
--
-- Adding events, per user of the batch: the probe for two earlier events is as before. A
-- user with two or more has hour rows when their key says so (one probe); otherwise their
-- earlier events, at most the limit, are read. A user who stays in one hour takes back the
-- contribution of their latest events so far and adds that of their latest now; a user who
-- leaves it takes it back and enters the hour rows with all their events. Removing events
-- from a user without hour rows does the same from what is left.
--
-- Databases written before this migration keep their hour rows: every user who has them has
-- two or more events, which is all the model asks.

-- The most events a user without hour rows may have.
CREATE FUNCTION adfunnel_one_hour_limit() RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT 8';

-- The rows `single` counts for the users of `rel` (a FROM item with the demographic columns
-- and `sign`, all events of a user and sign in one hour): per user and sign, their latest
-- event, with a TikTok user's funnel stage, country and device from their latest top-funnel
-- event when they have one (SPEC §4). Window functions, not a join of the two latest events:
-- the planner cannot estimate a filtered common table expression, and it chose a merge join
-- on the sign alone, comparing every pair of users (1.2 million pairs for 4,280 rows). The
-- sorts lead with the user: led by the sign or the source (two values each), nearly every
-- comparison would be decided by a later key, read again from the middle of the row.
CREATE FUNCTION adfunnel_one_hour_latest(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'SELECT * FROM (SELECT DISTINCT ON (user_id, source, sign) event_id, source, user_id,'
    '  event_time, received_at, CASE WHEN top THEN ''top'' ELSE funnel_stage END AS funnel_stage,'
    '  age, gender, CASE WHEN top THEN top_country ELSE country END AS country, city,'
    '  followers, CASE WHEN top THEN top_device ELSE device END AS device, sign'
    ' FROM (SELECT *, source = ''tiktok'' AND first_value(funnel_stage) OVER tops = ''top'''
    '  AS top, first_value(country) OVER tops AS top_country,'
    '  first_value(device) OVER tops AS top_device FROM %1$s'
    '  WINDOW tops AS (PARTITION BY user_id, source, sign ORDER BY funnel_stage = ''top'' DESC,'
    '  event_time DESC, received_at DESC, event_id DESC)) x'
    ' ORDER BY user_id, source, sign, event_time DESC, received_at DESC, event_id DESC) l',
    rel)
$$;

-- A user's earlier events, at most the limit, through the hash index on the user id: `u`
-- names the user's row, `rel` the rows to leave out, `others` as in the probes.
CREATE FUNCTION adfunnel_stored_events(u text, rel text, others boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    '(SELECT * FROM events e WHERE e.user_id = %1$s.user_id AND e.source = %1$s.source'
    ' AND e.event_id NOT IN (SELECT event_id FROM %2$s)%3$s LIMIT %4$s)',
    u, rel, adfunnel_not_own(others), adfunnel_one_hour_limit())
$$;

-- Step 1 of adding rows (`rel`): every user of the batch who will not simply be a user with
-- one event, with how many events they had before it (the exact count for a user without
-- hour rows, 2 for "two or more" for one with) and what happens to them: 'h' had hour rows,
-- 'm' moves to hour rows (their events span two hours or pass the limit), 's' stays counted
-- as a single user, by their latest events.
DROP FUNCTION adfunnel_count_added(text, boolean);
CREATE FUNCTION adfunnel_count_added(rel text, others boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH batch AS (SELECT source, user_id, count(*) AS n, min(event_time) AS first_time,'
    '  max(event_time) AS last_time FROM %1$s GROUP BY 1, 2),'
    ' own AS MATERIALIZED %2$s,'
    ' probed AS (SELECT b.*, p.before, p.stored_time FROM batch b'
    '  CROSS JOIN LATERAL (SELECT count(*) AS before, min(x.event_time) AS stored_time FROM'
    '   (SELECT e.event_time FROM events e WHERE e.user_id = b.user_id'
    '    AND e.source = b.source AND e.event_id NOT IN (SELECT event_id FROM %1$s)%3$s'
    '    LIMIT 2) x) p),'
    ' counted AS (SELECT p.*, CASE WHEN p.before < 2 THEN p.before'
    '  WHEN EXISTS (SELECT 1 FROM repeat_user_hours h WHERE h.user_id = p.user_id'
    '   AND h.track = CASE p.source WHEN ''facebook'' THEN ''f'' ELSE ''t'' END) THEN NULL'
    '  ELSE (SELECT count(*) FROM %6$s x) END AS stored'
    '  FROM probed p WHERE p.before + p.n >= 2)'
    ' SELECT array_agg(source), array_agg(user_id), array_agg(coalesce(stored, 2)),'
    '  array_agg(CASE WHEN stored IS NULL THEN ''h'''
    '  WHEN stored + n > %7$s OR %4$s <> %5$s'
    '  THEN ''m'' ELSE ''s'' END)'
    ' FROM counted',
    rel, adfunnel_written_by(rel), adfunnel_not_own(others),
    -- Hours of the earliest and latest events, stored or new: truncated once per user.
    'date_trunc(''hour'', least(stored_time, first_time) AT TIME ZONE ''UTC'')',
    'date_trunc(''hour'', greatest(stored_time, last_time) AT TIME ZONE ''UTC'')',
    adfunnel_stored_events('p', rel, others), adfunnel_one_hour_limit())
$$;

-- 0023's step 2 of adding rows, for the users step 1 names: their earlier events are read
-- when they have no hour rows; a user who stays in one hour changes the single users'
-- rollups from their latest events before to their latest now, and one who moves takes the
-- former back and enters the hour rows with all their events.
DROP FUNCTION adfunnel_apply_added(text);
CREATE FUNCTION adfunnel_apply_added(rel text, others boolean) RETURNS text
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
    ' copies AS (INSERT INTO repeat_user_copies'
    '  SELECT event_time, event_key, source, user_id FROM entering_rows'
    '  WHERE event_id NOT IN (SELECT event_id FROM won)'
    '  ORDER BY source, user_id, event_time),'
    ' displaced AS (INSERT INTO repeat_user_copies'
    '  SELECT (d.h).event_time, adfunnel_event_key((d.h).event_id), (d.h).source, (d.h).user_id'
    '  FROM won d WHERE d.own ORDER BY 3, 4, 1),'
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

-- 0022's hour rows of entering events, probing the stored hours of the users who have them
-- (state 'h'), not of every user with two or more events before.
CREATE OR REPLACE FUNCTION adfunnel_hours_added() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format($q$
 candidates AS (
    SELECT *, lead(hour) OVER (PARTITION BY user_id, track ORDER BY hour) AS next_candidate,
           (source, user_id) IN (SELECT source, user_id FROM multi WHERE state = 'h') AS stored
    FROM (SELECT DISTINCT ON (user_id, track, hour) hour, event_time, received_at, user_id,
                 track, event_id, source, funnel_stage, age, gender, country, city, followers,
                 device
          FROM (%1$s) t
          ORDER BY user_id, track, hour, event_time DESC, received_at DESC, event_id DESC) c),
 -- The user's hour row at or before each candidate: its own (`own`), or the one before it,
 -- whose link now points at the first new hour after it. A new hour links to the nearer of
 -- the next candidate and the user's next stored hour, an existing one to the nearer of the
 -- next candidate and its old link.
 held AS MATERIALIZED (
    SELECT c.*, p.h, p.tid, (p.h).hour IS NOT DISTINCT FROM c.hour AS own,
           least(coalesce(c.next_candidate, 'infinity'),
                 CASE WHEN NOT c.stored THEN 'infinity'
                 WHEN (p.h).hour IS NOT DISTINCT FROM c.hour THEN (p.h).next_hour
                 ELSE coalesce((SELECT h.hour FROM repeat_user_hours h
                     WHERE h.track = c.track AND h.user_id = c.user_id AND h.hour > c.hour
                     ORDER BY h.hour LIMIT 1), 'infinity') END) AS next_hour
    FROM candidates c
    LEFT JOIN LATERAL (SELECT h, h.ctid AS tid FROM repeat_user_hours h
        WHERE c.stored AND h.track = c.track AND h.user_id = c.user_id AND h.hour <= c.hour
        ORDER BY h.hour DESC LIMIT 1) p ON true),
 hours_before AS MATERIALIZED (
    SELECT DISTINCT ON (tid) (h).*, tid FROM held WHERE tid IS NOT NULL),
 relinked AS (
    SELECT tid, min(hour) AS next_hour FROM held WHERE NOT own AND tid IS NOT NULL
    GROUP BY 1),
 -- Every row of `hours_before` once: candidates (the later event of the two wins an
 -- existing hour), then the relinked rows that are not candidates themselves.
 hours_after AS MATERIALIZED (
    SELECT d.track, d.hour, d.next_hour, %2$s, CASE WHEN d.own THEN d.tid END AS tid
    FROM held d
    WHERE NOT d.own OR ROW(d.event_time, d.received_at, d.event_id)
        > ROW((d.h).event_time, (d.h).received_at, (d.h).event_id)
    UNION ALL
    SELECT d.track, d.hour, d.next_hour, %4$s, d.tid FROM held d
    WHERE d.own AND ROW(d.event_time, d.received_at, d.event_id)
        <= ROW((d.h).event_time, (d.h).received_at, (d.h).event_id)
    UNION ALL
    SELECT b.track, b.hour, least(b.next_hour, r.next_hour), %3$s, b.tid
    FROM relinked r JOIN hours_before b ON b.tid = r.tid
    WHERE r.tid NOT IN (SELECT tid FROM held WHERE own)),
 hours_updated AS (
    UPDATE repeat_user_hours h SET (next_hour, %5$s) = ROW(a.next_hour, %6$s)
    FROM hours_after a WHERE h.ctid = a.tid AND a.tid IS NOT NULL),
 hours_inserted AS (
    INSERT INTO repeat_user_hours SELECT a.track, a.hour, a.next_hour, %6$s FROM hours_after a
    WHERE a.tid IS NULL ORDER BY a.track, a.user_id, a.hour),%7$s$q$,
    adfunnel_tracked('entering_rows'),
    adfunnel_demographic_columns('d'),
    adfunnel_demographic_columns('b'),
    -- The hour's stored event, a field of the row the probe found.
    replace(adfunnel_demographic_columns('h'), 'h.', '(d.h).'),
    replace(adfunnel_demographic_columns('x'), 'x.', ''),
    adfunnel_demographic_columns('a'),
    adfunnel_hour_rollups())
$$;

-- 0023's step 2 of removing rows, for users without hour rows too: what is left of them
-- (`kept`, `others` leave out what step 1 of adding counts) changes the single users'
-- rollups from their latest events before to their latest now. `several`: the user has hour
-- rows; only they have pointers, hour rows to rebuild, or go back to one event.
-- `adfunnel_hours_removed` (0023) is left as it was: it still takes every touched user with
-- two or more events before for one with hour rows, and for a user without them its probes
-- of their hour rows and pointers find nothing.
DROP FUNCTION adfunnel_apply_removed(text);
CREATE FUNCTION adfunnel_apply_removed(rel text, kept text, others boolean) RETURNS text
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
    ' left_keys AS (SELECT c.event_key, NULL::text AS event_id FROM touched t'
    '  JOIN repeat_user_copies c ON (c.source, c.user_id) = (t.source, t.user_id)'
    '  WHERE t.several AND t.after = 1'
    '  UNION ALL SELECT adfunnel_event_key(h.event_id), h.event_id FROM touched t'
    '  JOIN repeat_user_hours h ON h.user_id = t.user_id'
    '  AND h.track = CASE WHEN t.source = ''facebook'' THEN ''f'' ELSE ''t'' END'
    '  WHERE t.several AND t.after = 1),'
    ' back_rows AS MATERIALIZED (SELECT DISTINCT ON (e.event_key) e.event_time AS copy_time,'
    '  e.event_key, %3$s FROM left_keys k JOIN events e ON e.event_key = k.event_key'
    '  WHERE (k.event_id IS NULL OR e.event_id = k.event_id)'
    '  AND e.event_key NOT IN (SELECT event_key FROM %1$s) ORDER BY e.event_key),'
    ' back AS (SELECT %3$s FROM back_rows e),'
    ' uncopied AS (DELETE FROM repeat_user_copies c USING'
    '  (SELECT source, user_id, event_time, event_key FROM removed WHERE several'
    '   UNION ALL SELECT source, user_id, copy_time, event_key FROM back_rows) x'
    '  WHERE (c.source, c.user_id, c.event_time, c.event_key)'
    '   = (x.source, x.user_id, x.event_time, x.event_key)),'
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

-- 0019's trigger, with the new steps' arguments.
CREATE OR REPLACE FUNCTION adfunnel_apply_demographics() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sources text[];
    users text[];
    before bigint[];
    after bigint[];
    states text[];
    kept text;
BEGIN
    -- One writer per source at a time from here to commit, in source order (a retention
    -- batch holds both sources' events).
    EXECUTE format('SELECT array_agg(DISTINCT source ORDER BY source) FROM (%s) s',
        CASE TG_OP WHEN 'INSERT' THEN 'SELECT source FROM new_rows'
                   WHEN 'DELETE' THEN 'SELECT source FROM old_rows'
                   ELSE 'SELECT source FROM new_rows UNION ALL SELECT source FROM old_rows' END)
    INTO sources;
    IF sources IS NULL THEN
        RETURN NULL;  -- no rows
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('adfunnel demographics ' || s))
    FROM unnest(sources) AS s ORDER BY s;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        -- A replacement's new rows (UPDATE) are counted by the adding steps below.
        kept := CASE TG_OP WHEN 'UPDATE' THEN 'new_rows' ELSE 'old_rows' END;
        EXECUTE adfunnel_count_removed('old_rows', kept, TG_OP = 'UPDATE')
        INTO sources, users, before, after;
        IF sources IS NOT NULL THEN
            EXECUTE adfunnel_apply_removed('old_rows', kept, TG_OP = 'UPDATE')
            USING sources, users, before, after;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE adfunnel_count_added('new_rows', TG_OP = 'UPDATE')
        INTO sources, users, before, states;
        EXECUTE adfunnel_apply_added('new_rows', TG_OP = 'UPDATE')
        USING sources, users, before, states;
    END IF;
    RETURN NULL;
END
$$
-- As 0012 set them.
SET jit = off SET enable_seqscan = off SET enable_bitmapscan = off;
