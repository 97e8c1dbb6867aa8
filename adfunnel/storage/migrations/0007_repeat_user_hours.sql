-- Demographics of users who come back, read in time proportional to the answer (SPEC §4, §8).
--
-- Until now "the latest event in range of every user with several events" was a DISTINCT ON
-- over every copied event in the range: with 30 % returning users that sorted 820,000 rows
-- of 1.5 M events (5.7 s), and grew with every event. Now each such user keeps one row per
-- hour they were active, per track, holding their latest event of that hour and the next
-- hour they were active again (`next_hour`, infinity when none). A user's latest event in
-- a range of whole hours [F, T) is then the row of the one hour h in [F, T) whose next
-- active hour is at or past T. Rollups keyed by the hour and the day of the next active hour
-- count those users per attribute without reading a user: the rows whose next day is past
-- T's day. Read row by row are only the users whose next active hour falls later on T's own
-- day, and the ragged minutes at the range's ends (the reporter's queries say how).
--
-- Tracks: 'f' every Facebook event (age, gender, country, city), 't' every TikTok event
-- (followers), 'p' TikTok top-funnel events (device, country come from those, SPEC §4).
--
-- Writes stay O(batch): a batch's events of repeat users update their own hour rows and, for
-- an hour a user had not been active in, link it between the user's hours before and after
-- it (two index probes). Only a removal (an earliest-copy replacement or a delete) re-reads
-- the touched user's rows: their hours, and their copies within each affected hour.

-- A removal recounts one user-hour from the copies: by time within the user.
DROP INDEX repeat_user_events_user_idx;
CREATE INDEX repeat_user_events_user_idx ON repeat_user_events (source, user_id, event_time);

CREATE TABLE repeat_user_hours (
    track         text COLLATE "C" NOT NULL CHECK (track IN ('f', 't', 'p')),
    hour          timestamptz NOT NULL,
    next_hour     timestamptz NOT NULL,
    event_id      text NOT NULL,
    source        text NOT NULL,
    user_id       text COLLATE "C" NOT NULL,
    event_time    timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    funnel_stage  text NOT NULL,
    age           integer,
    gender        text,
    country       text,
    city          text,
    followers     bigint,
    device        text,
    PRIMARY KEY (track, user_id, hour)
);
-- The exact median/min/max read the users of one follower bin.
CREATE INDEX repeat_user_hours_followers_idx ON repeat_user_hours (followers, hour)
    WHERE track = 't';
-- Users whose next active hour is later on the day a range ends on.
CREATE INDEX repeat_user_hours_next_idx ON repeat_user_hours (track, next_hour);

-- Hour rows counted by their hour and the day of their next active hour (infinity: none),
-- sharded per writing connection like the other rollups. Days, not hours: users come back
-- at any time, and a rollup keyed by the next hour would hold about a row per user-hour.
CREATE TABLE repeat_demographic_rollup (
    hour       timestamptz NOT NULL,
    next_day   timestamptz NOT NULL,
    source     text NOT NULL,
    dim        text NOT NULL,
    key1       text,
    key2       text,
    shard      integer NOT NULL,
    users      bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (hour, next_day, source, dim, key1, key2, shard)
);
CREATE TABLE repeat_follower_rollup (
    hour       timestamptz NOT NULL,
    next_day   timestamptz NOT NULL,
    bin        bigint,
    shard      integer NOT NULL,
    users      bigint NOT NULL,
    followers  numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (hour, next_day, bin, shard)
);

-- The rollups' day of a next active hour.
CREATE FUNCTION adfunnel_next_day(next_hour timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
SELECT date_trunc('day', next_hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- The hour rows of a user: in this order everywhere.
CREATE FUNCTION adfunnel_hour_columns(alias text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format('%1$I.track, %1$I.hour, %1$I.next_hour, ', alias)
       || adfunnel_demographic_columns(alias)
$$;

-- Demographics rows (`rel`, columns of adfunnel_demographic_columns) as rows of each track
-- they belong to, with their hour.
CREATE FUNCTION adfunnel_tracked(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format($q$
    SELECT CASE WHEN r.source = 'facebook' THEN 'f' ELSE 't' END AS track,
           date_trunc('hour', r.event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, %2$s
    FROM %1$s r
    UNION ALL
    SELECT 'p', date_trunc('hour', r.event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', %2$s
    FROM %1$s r WHERE r.source = 'tiktok' AND r.funnel_stage = 'top'$q$,
    rel, adfunnel_demographic_columns('r'))
$$;

-- The tail shared by adding and removing: `hours_before` and `hours_after` (hour rows as
-- they were and as they are now, for the same keys) become signed changes of the repeat
-- rollups in this connection's shard; rows that did not change cancel out.
CREATE FUNCTION adfunnel_hour_rollups() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT $q$
 hour_changes AS MATERIALIZED (
    SELECT b.*, -1 AS sign FROM hours_before b UNION ALL SELECT a.*, 1 FROM hours_after a),
 hour_combos AS (
    SELECT hour, adfunnel_next_day(next_hour) AS next_day, source, funnel_stage, age, gender,
           country, city, device, sum(sign) AS users
    FROM hour_changes WHERE track <> 't' GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9),
 repeat_demo AS (
    INSERT INTO repeat_demographic_rollup AS r
    SELECT c.hour, c.next_day, c.source, k.dim, k.key1, k.key2, pg_backend_pid(), sum(c.users)
    FROM hour_combos c CROSS JOIN LATERAL adfunnel_demographic_keys(c.source, c.funnel_stage,
         c.age, c.gender, c.country, c.city, c.device) k
    GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(c.users) <> 0 ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (hour, next_day, source, dim, key1, key2, shard)
    DO UPDATE SET users = r.users + EXCLUDED.users),
 repeat_followers AS (
    INSERT INTO repeat_follower_rollup AS r
    SELECT hour, adfunnel_next_day(next_hour), adfunnel_follower_bin(followers), pg_backend_pid(),
           sum(sign),
           coalesce(sum(followers * sign), 0)
    FROM hour_changes WHERE track = 't'
    GROUP BY 1, 2, 3 HAVING sum(sign) <> 0 OR coalesce(sum(followers * sign), 0) <> 0
    ORDER BY 1, 2, 3
    ON CONFLICT (hour, next_day, bin, shard)
    DO UPDATE SET users = r.users + EXCLUDED.users, followers = r.followers + EXCLUDED.followers)
$q$
$$;

-- Hour rows written back: `hours_after` replaces what is there for its keys.
CREATE FUNCTION adfunnel_hour_upsert() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format($q$
 hours_written AS (
    INSERT INTO repeat_user_hours AS h SELECT * FROM hours_after ORDER BY track, user_id, hour
    ON CONFLICT (track, user_id, hour) DO UPDATE SET (next_hour, %1$s) = ROW(EXCLUDED.next_hour, %2$s)),$q$,
    replace(adfunnel_demographic_columns('x'), 'x.', ''),
    adfunnel_demographic_columns('excluded'))
$$;

-- Events entering the repeat part (`entering`: a batch's events of users with several, and
-- the one stored event of each user who had exactly one) update their hour rows. A hour row
-- keeps the latest event of its hour; an hour new to its user is linked between the user's
-- nearest hours before and after it (found by two index probes, never the user's history):
-- the one before now points at it, it points at the next.
CREATE FUNCTION adfunnel_hours_added() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format($q$
 candidates AS MATERIALIZED (
    SELECT DISTINCT ON (track, user_id, hour) * FROM (%1$s) t
    ORDER BY track, user_id, hour, event_time DESC, received_at DESC, event_id DESC),
 fresh AS MATERIALIZED (
    SELECT c.track, c.user_id, c.hour, p.hour AS prev_hour,
           coalesce(n.hour, 'infinity') AS next_held
    FROM candidates c
    LEFT JOIN LATERAL (SELECT h.hour FROM repeat_user_hours h
        WHERE h.track = c.track AND h.user_id = c.user_id AND h.hour < c.hour
        ORDER BY h.hour DESC LIMIT 1) p ON true
    LEFT JOIN LATERAL (SELECT h.hour FROM repeat_user_hours h
        WHERE h.track = c.track AND h.user_id = c.user_id AND h.hour > c.hour
        ORDER BY h.hour LIMIT 1) n ON true
    WHERE NOT EXISTS (SELECT 1 FROM repeat_user_hours h
        WHERE (h.track, h.user_id, h.hour) = (c.track, c.user_id, c.hour))),
 relinked AS MATERIALIZED (
    SELECT track, user_id, prev_hour AS hour, min(hour) AS next_hour
    FROM fresh WHERE prev_hour IS NOT NULL GROUP BY 1, 2, 3),
 hours_before AS MATERIALIZED (
    SELECT h.* FROM repeat_user_hours h WHERE (h.track, h.user_id, h.hour) IN
        (SELECT track, user_id, hour FROM candidates
         UNION SELECT track, user_id, hour FROM relinked)),
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

-- Rows removed from repeat users (`removed`, with each user's count `before`; `touched`
-- with `before` and `after`): every hour row of those users is rebuilt. Hours that lost an
-- event are recounted from the user's copies in that hour (less the removed ones, which this
-- statement deletes but cannot yet see deleted); users left with fewer than two events lose
-- all their hour rows; the rest are relinked in order.
CREATE FUNCTION adfunnel_hours_removed() RETURNS text
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
    FROM struck s JOIN repeat_user_events c
        ON c.source = s.source AND c.user_id = s.user_id
        AND c.event_time >= s.hour AND c.event_time < s.hour + interval '1 hour'
        AND (s.track <> 'p' OR c.funnel_stage = 'top')
    WHERE c.event_id NOT IN (SELECT event_id FROM removed)
    ORDER BY s.track, s.user_id, s.hour, c.event_time DESC, c.received_at DESC,
             c.event_id DESC),
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
    adfunnel_demographic_columns('c'),
    adfunnel_demographic_columns('b'),
    adfunnel_demographic_columns('k'),
    adfunnel_hour_upsert(),
    adfunnel_hour_rollups())
$$;

-- 0006's step 2 of adding rows, now also keeping the hour rows.
CREATE OR REPLACE FUNCTION adfunnel_apply_added(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH multi AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],'
    '  $4::text[]) AS m (source, user_id, before, first_event_id)),'
    ' moved AS MATERIALIZED (SELECT %3$s FROM multi m JOIN events e'
    '  ON e.event_id = m.first_event_id WHERE m.before = 1),'
    -- The batch is read twice rather than copied once: hashed membership tests split it,
    -- linear whatever the planner guesses of the sizes.
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

-- 0006's step 2 of removing rows, now also rebuilding the touched users' hour rows.
CREATE OR REPLACE FUNCTION adfunnel_apply_removed(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH touched AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],'
    '  $4::bigint[]) AS t (source, user_id, before, after)),'
    ' removed AS MATERIALIZED (SELECT %2$s, t.before FROM %1$s r JOIN touched t'
    '  ON (t.source, t.user_id) = (r.source, r.user_id)),'
    ' back AS MATERIALIZED (SELECT %3$s FROM touched t JOIN repeat_user_events c'
    '  ON (c.source, c.user_id) = (t.source, t.user_id)'
    '  WHERE t.before >= 2 AND t.after = 1 AND c.event_id NOT IN (SELECT event_id FROM %1$s)),'
    ' uncopied AS (DELETE FROM repeat_user_events WHERE event_id IN'
    '  (SELECT event_id FROM removed WHERE before >= 2 UNION ALL SELECT event_id FROM back)),'
    ' gone AS (DELETE FROM demographic_users u USING touched t'
    '  WHERE (u.source, u.user_id) = (t.source, t.user_id) AND t.after = 0),'
    ' refirst AS (UPDATE demographic_users u SET first_event_id = b.event_id FROM back b'
    '  WHERE (u.source, u.user_id) = (b.source, b.user_id)),'
    '%6$s,'
    ' single AS (SELECT %4$s, -1 AS sign FROM removed d WHERE before = 1'
    '  UNION ALL SELECT *, 1 FROM back),'
    '%5$s',
    rel,
    adfunnel_demographic_columns('r'),
    adfunnel_demographic_columns('c'),
    adfunnel_demographic_columns('d'),
    adfunnel_single_rollups(),
    adfunnel_hours_removed())
$$;

-- What is stored already: the hour rows of every repeat user from their copies, and their
-- rollups, in shard 0.
INSERT INTO repeat_user_hours
SELECT track, hour,
       coalesce(lead(hour) OVER (PARTITION BY track, user_id ORDER BY hour), 'infinity'),
       event_id, source, user_id, event_time, received_at, funnel_stage, age, gender, country,
       city, followers, device
FROM (SELECT DISTINCT ON (track, user_id, hour) *
      FROM (SELECT CASE WHEN r.source = 'facebook' THEN 'f' ELSE 't' END AS track,
                   date_trunc('hour', r.event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
                   r.*
            FROM repeat_user_events r
            UNION ALL
            SELECT 'p', date_trunc('hour', r.event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                   r.*
            FROM repeat_user_events r WHERE r.source = 'tiktok' AND r.funnel_stage = 'top') t
      ORDER BY track, user_id, hour, event_time DESC, received_at DESC, event_id DESC) latest;

INSERT INTO repeat_demographic_rollup
SELECT h.hour, adfunnel_next_day(h.next_hour), h.source, k.dim, k.key1, k.key2, 0, count(*)
FROM repeat_user_hours h CROSS JOIN LATERAL adfunnel_demographic_keys(h.source,
     h.funnel_stage, h.age, h.gender, h.country, h.city, h.device) k
WHERE h.track <> 't' GROUP BY 1, 2, 3, 4, 5, 6;

INSERT INTO repeat_follower_rollup
SELECT hour, adfunnel_next_day(next_hour), adfunnel_follower_bin(followers), 0, count(*),
       coalesce(sum(followers), 0)
FROM repeat_user_hours WHERE track = 't' GROUP BY 1, 2, 3;
