-- The repeat users' part of the demographics trigger, with less work per entering event
-- (SPEC §8). The statements of 0017 read the same, but the hour rows of entering events are
-- now found, chosen and linked in one pass over the batch's user-hours, already in order:
-- * Before, the candidates (a batch's latest event per user, track and hour) and the hour
--   rows found for them were sorted again to pick each hour's latest event, then joined
--   three times, each join sorting its sides, to find each hour's next active hour. Now each
--   candidate carries the next candidate of its user (a window over the candidates' own
--   sort), the probe that finds its hour row tells its next active hour, and an existing hour
--   row is kept or replaced by comparing it with its candidate.
-- * Rows are written with a plain INSERT where they are new and an UPDATE where they exist,
--   not an upsert: writers of a source take turns in the trigger (0012's advisory lock), so
--   the probes already know which exist, and a speculative insert checks the index twice.
--   For the same reason a pointer is inserted without ON CONFLICT: an event enters the
--   repeat part once, and a removal drops its pointer in an earlier statement of the same
--   trigger before an earliest-copy replacement adds it back.
-- * Column orders put each sort's keys first, fixed-width ones ahead of any text: a sort
--   compares the later keys of a row by walking its columns up to them.
-- The instruction count of PostgreSQL for the same two batches of 16,000 events, with 30 %
-- returning users (docs/performance.md), went down by 14 %.

-- 0017's step 2 of adding rows: the pointers inserted plainly, the batch's entering rows read
-- by the hour rows as they are.
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
    ' copies AS (INSERT INTO repeat_user_copies'
    '  SELECT event_time, event_key, source, user_id FROM entering_rows'
    '  ORDER BY source, user_id, event_time),'
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

-- 0017's hour rows of entering events, in one pass over the candidates.
CREATE OR REPLACE FUNCTION adfunnel_hours_added() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format($q$
 candidates AS (
    SELECT *, lead(hour) OVER (PARTITION BY user_id, track ORDER BY hour) AS next_candidate
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
    SELECT c.*, p.h, (p.h).hour IS NOT DISTINCT FROM c.hour AS own,
           least(coalesce(c.next_candidate, 'infinity'),
                 CASE WHEN (p.h).hour IS NOT DISTINCT FROM c.hour THEN (p.h).next_hour
                 ELSE coalesce((SELECT h.hour FROM repeat_user_hours h
                     WHERE h.track = c.track AND h.user_id = c.user_id AND h.hour > c.hour
                     ORDER BY h.hour LIMIT 1), 'infinity') END) AS next_hour
    FROM candidates c
    LEFT JOIN LATERAL (SELECT h FROM repeat_user_hours h
        WHERE h.track = c.track AND h.user_id = c.user_id AND h.hour <= c.hour
        ORDER BY h.hour DESC LIMIT 1) p ON true),
 hours_before AS MATERIALIZED (
    SELECT DISTINCT ON ((h).track, (h).user_id, (h).hour) (h).* FROM held
    WHERE (h).hour IS NOT NULL),
 relinked AS (
    SELECT (h).track, (h).user_id, (h).hour, min(hour) AS next_hour FROM held
    WHERE NOT own AND (h).hour IS NOT NULL GROUP BY 1, 2, 3),
 -- Every key of `hours_before` once: candidates (the later event of the two wins an
 -- existing hour), then the relinked rows that are not candidates themselves.
 hours_after AS MATERIALIZED (
    SELECT d.track, d.hour, d.next_hour, %2$s FROM held d
    WHERE NOT d.own OR ROW(d.event_time, d.received_at, d.event_id)
        > ROW((d.h).event_time, (d.h).received_at, (d.h).event_id)
    UNION ALL
    SELECT d.track, d.hour, d.next_hour, %4$s FROM held d
    WHERE d.own AND ROW(d.event_time, d.received_at, d.event_id)
        <= ROW((d.h).event_time, (d.h).received_at, (d.h).event_id)
    UNION ALL
    SELECT b.track, b.hour, least(b.next_hour, r.next_hour), %3$s
    FROM relinked r JOIN hours_before b
        ON (b.track, b.user_id, b.hour) = (r.track, r.user_id, r.hour)
    WHERE (r.track, r.user_id, r.hour) NOT IN (SELECT track, user_id, hour FROM held WHERE own)),
 hours_updated AS (
    UPDATE repeat_user_hours h SET (next_hour, %5$s) = ROW(a.next_hour, %6$s)
    FROM hours_after a
    WHERE (h.track, h.user_id, h.hour) = (a.track, a.user_id, a.hour)
        AND (a.track, a.user_id, a.hour) IN (SELECT track, user_id, hour FROM hours_before)),
 hours_inserted AS (
    INSERT INTO repeat_user_hours SELECT * FROM hours_after a
    WHERE (a.track, a.user_id, a.hour) NOT IN (SELECT track, user_id, hour FROM hours_before)
    ORDER BY track, user_id, hour),%7$s$q$,
    adfunnel_tracked('entering_rows'),
    adfunnel_demographic_columns('d'),
    adfunnel_demographic_columns('b'),
    -- The hour's stored event, a field of the row the probe found.
    replace(adfunnel_demographic_columns('h'), 'h.', '(d.h).'),
    replace(adfunnel_demographic_columns('x'), 'x.', ''),
    adfunnel_demographic_columns('a'),
    adfunnel_hour_rollups())
$$;
