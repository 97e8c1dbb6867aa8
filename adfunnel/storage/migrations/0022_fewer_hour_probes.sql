-- Fewer index probes and index entries for the hour rows of users who come back (SPEC §8).
--
-- * Only a user with two or more events stored before the batch has hour rows (a user with
--   one is counted by the single users' rollups), and step 1 of adding rows already knows
--   who they are (`multi.before`). The probes for the hour row at or before each candidate,
--   and for the next stored hour, ran for every user-hour of the batch, also for users seen
--   for the first time or moving over from one event, where they could only find nothing;
--   they now run only for users with stored hours (a one-time filter in the lateral probe).
-- * `repeat_user_hours_next_idx` served one read: the users whose next active hour falls
--   later on the day a range ends on, a finite hour. Most hour rows are a user's latest and
--   link to infinity, and each one was an index entry no query could use; the index now
--   holds the finite links only, and that read says so (storage/_demographics.py).

-- 0021's hour rows of entering events; the two probes only for users with stored hours.
CREATE OR REPLACE FUNCTION adfunnel_hours_added() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format($q$
 candidates AS (
    SELECT *, lead(hour) OVER (PARTITION BY user_id, track ORDER BY hour) AS next_candidate,
           (source, user_id) IN (SELECT source, user_id FROM multi WHERE before >= 2) AS stored
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

DROP INDEX repeat_user_hours_next_idx;
CREATE INDEX repeat_user_hours_next_idx ON repeat_user_hours (track, next_hour)
    WHERE next_hour < 'infinity';
