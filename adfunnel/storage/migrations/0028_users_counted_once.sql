-- 0026's step 1 of adding rows, with each user's count evaluated once (SPEC §8).
--
-- The final SELECT reads a user's `stored` three times, and `counted` was inlined into it:
-- the planner copied the CASE into each use, so a user with two earlier events was probed
-- for hour rows two or three times and a user without them had their earlier events read
-- three times (auto_explain of a 600-hot-user batch: 1,171 users, 2,356 probes of the
-- hour rows' key). Materialized, `counted` evaluates it once per user. Its estimate then
-- made the planner hash every hour row for the test instead of probing each user's key:
-- OFFSET 0 keeps the probe correlated, as in the reports (`_several`).
CREATE OR REPLACE FUNCTION adfunnel_count_added(rel text, others boolean) RETURNS text
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
    ' counted AS MATERIALIZED (SELECT p.*, CASE WHEN p.before < 2 THEN p.before'
    '  WHEN EXISTS (SELECT 1 FROM repeat_user_hours h WHERE h.user_id = p.user_id'
    '   AND h.track = CASE p.source WHEN ''facebook'' THEN ''f'' ELSE ''t'' END OFFSET 0)'
    '  THEN NULL'
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
