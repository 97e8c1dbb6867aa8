-- Demographics count distinct users by their latest event in a range. Nearly every user has
-- exactly one event per source (SPEC §3), and a user with one event is in a range exactly when
-- that event is: those users can be counted like events, from per-bucket rollups. The few
-- users with two or more events keep a narrow copy of their events in `repeat_user_events`,
-- where "latest in range" is computed at query time. Statement triggers move a user from one
-- part to the other as events of theirs are inserted, replaced or deleted, in the writer's
-- transaction, so both parts always agree with the raw rows.

-- What each event contributes to the demographics, one row per dimension (age bucket,
-- gender, country, country+city for Facebook; device and country of top-funnel engagement
-- for TikTok). The single definition used by the triggers and by every query.
CREATE FUNCTION adfunnel_demographic_keys(
    source text, funnel_stage text, age integer, gender text, country text, city text,
    device text
) RETURNS TABLE (dim text, key1 text, key2 text)
LANGUAGE sql IMMUTABLE AS $$
SELECT k.* FROM (VALUES
    ('age', CASE WHEN age < 13 THEN '0-12' WHEN age < 18 THEN '13-17' WHEN age < 25 THEN '18-24'
                 WHEN age < 35 THEN '25-34' WHEN age < 45 THEN '35-44' WHEN age < 55 THEN '45-54'
                 WHEN age < 65 THEN '55-64' ELSE '65+' END, NULL::text),
    ('gender', gender, NULL), ('country', country, NULL), ('city', country, city)
) k WHERE source = 'facebook'
UNION ALL
SELECT k.* FROM (VALUES ('device', device, NULL::text), ('country', country, NULL)) k
WHERE source = 'tiktok' AND funnel_stage = 'top'
$$;

-- Follower counts in bins of two significant digits (exact below 100): fine enough that the
-- bin holding the median has few users to read, coarse enough that a bucket's rollup stays
-- small. A bin never straddles a follower bucket boundary (powers of ten).
CREATE FUNCTION adfunnel_follower_bin(followers bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
SELECT CASE WHEN followers < 100 THEN followers
            ELSE followers - followers % (10::numeric ^ (length(followers::text) - 2))::bigint END
$$;

CREATE FUNCTION adfunnel_follower_bin_end(bin bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
SELECT CASE WHEN bin < 100 THEN bin + 1
            ELSE bin + (10::numeric ^ (length(bin::text) - 2))::bigint END
$$;

CREATE FUNCTION adfunnel_follower_bucket(followers bigint) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
SELECT CASE WHEN followers < 1000 THEN '0-999' WHEN followers < 10000 THEN '1000-9999'
            WHEN followers < 100000 THEN '10000-99999'
            WHEN followers < 1000000 THEN '100000-999999' ELSE '1000000+' END
$$;

-- Users with exactly one event of their source, by the bucket of that event.
CREATE TABLE demographic_rollup_hour (
    bucket  timestamptz NOT NULL,
    source  text NOT NULL,
    dim     text NOT NULL,
    key1    text,
    key2    text,
    users   bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (bucket, source, dim, key1, key2)
);
CREATE TABLE demographic_rollup_day (LIKE demographic_rollup_hour INCLUDING ALL);

-- TikTok users with exactly one event, by bucket and follower bin (NULL: no follower count).
CREATE TABLE follower_rollup_hour (
    bucket     timestamptz NOT NULL,
    bin        bigint,
    users      bigint NOT NULL,
    followers  numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (bucket, bin)
);
CREATE TABLE follower_rollup_day (LIKE follower_rollup_hour INCLUDING ALL);

-- Every event of the users with two or more events of their source.
CREATE TABLE repeat_user_events (
    event_id      text PRIMARY KEY,
    source        text NOT NULL,
    user_id       text NOT NULL,
    event_time    timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    funnel_stage  text NOT NULL,
    age           integer,
    gender        text,
    country       text,
    city          text,
    followers     bigint,
    device        text
);
CREATE INDEX repeat_user_events_time_idx ON repeat_user_events (source, event_time);

-- The triggers look up every event of the users a statement touched; hash: the key is an
-- opaque id only ever compared for equality, and the index stays a third of a B-tree's size.
CREATE INDEX events_user_idx ON events USING hash (user_id);
-- The exact median/min/max read the users of one follower bin in a time range.
CREATE INDEX events_tiktok_followers_idx ON events (followers, event_time)
    WHERE source = 'tiktok';

-- One statement per trigger call: `added` and `removed` are the rows the statement wrote and
-- took away. Every event of the touched users is read after the change (`after`) and rebuilt
-- as it was before (`before`); users with one event before are taken out of the rollups,
-- users with one event after are put in, and `repeat_user_events` gains and loses rows to
-- hold exactly the events of the users with two or more.
CREATE FUNCTION adfunnel_demographic_statement(added text, removed text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH added AS MATERIALIZED (%1$s), removed AS MATERIALIZED (%2$s),'
    ' touched AS (SELECT DISTINCT source, user_id FROM'
    '  (SELECT source, user_id FROM added UNION ALL SELECT source, user_id FROM removed) t),'
    -- OFFSET 0 keeps the lookup per user, on the user index alone (flattened into a join,
    -- the planner would hash all of `events`; with the source inside, it would AND in
    -- the index that has the source first).
    ' after AS MATERIALIZED (SELECT e.* FROM touched t CROSS JOIN LATERAL (SELECT %3$s'
    '  FROM events e WHERE e.user_id = t.user_id OFFSET 0) e WHERE e.source = t.source),'
    ' before AS MATERIALIZED (SELECT * FROM after WHERE event_id NOT IN'
    '  (SELECT event_id FROM added) UNION ALL SELECT * FROM removed),'
    ' n_after AS MATERIALIZED (SELECT source, user_id, count(*) AS n FROM after GROUP BY 1, 2),'
    ' n_before AS MATERIALIZED (SELECT source, user_id, count(*) AS n FROM before GROUP BY 1, 2),'
    ' single AS MATERIALIZED ('
    '  SELECT b.*, -1 AS sign FROM before b JOIN n_before USING (source, user_id) WHERE n = 1'
    '  UNION ALL SELECT a.*, 1 FROM after a JOIN n_after USING (source, user_id) WHERE n = 1),'
    ' keep AS MATERIALIZED (SELECT a.* FROM after a JOIN n_after n USING (source, user_id)'
    '  LEFT JOIN n_before b USING (source, user_id) WHERE n.n >= 2'
    '  AND (coalesce(b.n, 0) < 2 OR a.event_id IN (SELECT event_id FROM added))),'
    ' gone AS (DELETE FROM repeat_user_events WHERE event_id IN ('
    '  SELECT b.event_id FROM before b JOIN n_before nb USING (source, user_id)'
    '  LEFT JOIN n_after na USING (source, user_id) WHERE nb.n >= 2'
    '  AND (coalesce(na.n, 0) < 2 OR b.event_id IN (SELECT event_id FROM removed))'
    '  EXCEPT SELECT event_id FROM keep)),'
    ' kept AS (INSERT INTO repeat_user_events AS r (%3$s) SELECT * FROM keep'
    '  ON CONFLICT (event_id) DO UPDATE SET (%3$s) = ROW(%6$s)),'
    -- Signed changes per hour and key, then the same summed per day. No ORDER BY for lock
    -- order: the rollup lock already serializes writers.
    ' demo_delta AS MATERIALIZED (SELECT %4$s AS bucket, s.source, k.dim, k.key1, k.key2,'
    '  sum(s.sign) AS users FROM single s CROSS JOIN LATERAL adfunnel_demographic_keys('
    '  s.source, s.funnel_stage, s.age, s.gender, s.country, s.city, s.device) k'
    '  GROUP BY 1, 2, 3, 4, 5),'
    ' follower_delta AS MATERIALIZED (SELECT %4$s AS bucket,'
    '  adfunnel_follower_bin(followers) AS bin, sum(sign) AS users,'
    '  coalesce(sum(followers * sign), 0) AS followers'
    '  FROM single WHERE source = ''tiktok'' GROUP BY 1, 2),'
    ' demo_hour AS (INSERT INTO demographic_rollup_hour AS r SELECT * FROM demo_delta'
    '  ON CONFLICT (bucket, source, dim, key1, key2) DO UPDATE SET users = r.users + EXCLUDED.users),'
    ' demo_day AS (INSERT INTO demographic_rollup_day AS r'
    '  SELECT %5$s, source, dim, key1, key2, sum(users) FROM demo_delta GROUP BY 1, 2, 3, 4, 5'
    '  ON CONFLICT (bucket, source, dim, key1, key2) DO UPDATE SET users = r.users + EXCLUDED.users),'
    ' followers_hour AS (INSERT INTO follower_rollup_hour AS r SELECT * FROM follower_delta'
    '  ON CONFLICT (bucket, bin) DO UPDATE SET users = r.users + EXCLUDED.users,'
    '  followers = r.followers + EXCLUDED.followers),'
    ' followers_day AS (INSERT INTO follower_rollup_day AS r'
    '  SELECT %5$s, bin, sum(users), sum(followers) FROM follower_delta GROUP BY 1, 2'
    '  ON CONFLICT (bucket, bin) DO UPDATE SET users = r.users + EXCLUDED.users,'
    '  followers = r.followers + EXCLUDED.followers)'
    ' SELECT count(*) FROM single',
    added, removed,
    'event_id, source, user_id, event_time, received_at, funnel_stage, age, gender, country,'
    ' city, followers, device',
    'date_trunc(''hour'', event_time AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC''',
    'date_trunc(''day'', bucket AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC''',
    'EXCLUDED.event_id, EXCLUDED.source, EXCLUDED.user_id, EXCLUDED.event_time,'
    ' EXCLUDED.received_at, EXCLUDED.funnel_stage, EXCLUDED.age, EXCLUDED.gender,'
    ' EXCLUDED.country, EXCLUDED.city, EXCLUDED.followers, EXCLUDED.device')
$$;

CREATE FUNCTION adfunnel_apply_demographics() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    columns constant text := 'event_id, source, user_id, event_time, received_at, funnel_stage,'
                             || ' age, gender, country, city, followers, device';
    nothing constant text := format('SELECT %s FROM events WHERE false', columns);
BEGIN
    -- The same lock as the count rollups: a user's events are counted by one writer at a
    -- time, and each statement below sees every event committed before it.
    PERFORM pg_advisory_xact_lock(183434241);
    EXECUTE adfunnel_demographic_statement(
        CASE WHEN TG_OP = 'DELETE' THEN nothing ELSE format('SELECT %s FROM new_rows', columns) END,
        CASE WHEN TG_OP = 'INSERT' THEN nothing ELSE format('SELECT %s FROM old_rows', columns) END);
    RETURN NULL;
END
$$
-- Every lookup here is a handful of rows out of millions, through an index. Without this,
-- a plan made from stale statistics (a table that grew since the last ANALYZE, as while
-- seeding) scans all of `events` once per touched user. And the statement is planned anew
-- for every call: JIT-compiling it costs a second, running it a few milliseconds.
SET enable_seqscan = off SET jit = off;

-- The count rollups' statements are planned anew for every call too.
ALTER FUNCTION adfunnel_apply_rollups() SET jit = off;

-- Rows stored before this migration: every stored event counts as added.
DO $$
BEGIN
    EXECUTE adfunnel_demographic_statement(
        'SELECT event_id, source, user_id, event_time, received_at, funnel_stage, age, gender,'
        ' country, city, followers, device FROM events',
        'SELECT event_id, source, user_id, event_time, received_at, funnel_stage, age, gender,'
        ' country, city, followers, device FROM events WHERE false');
END
$$;

-- A statement that both inserts and replaces rows (INSERT … ON CONFLICT DO UPDATE) would
-- fire these triggers twice with partial views of one change; the writers insert and replace
-- in separate statements (`storage.insert_events`).
CREATE TRIGGER events_demographics_insert AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_demographics();
CREATE TRIGGER events_demographics_update AFTER UPDATE ON events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_demographics();
CREATE TRIGGER events_demographics_delete AFTER DELETE ON events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_demographics();
