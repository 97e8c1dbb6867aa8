-- The demographic rollups' changes in one pass of grouping sets.
--
-- 0006 and 0007 summed a batch's rows per combination of every attribute first, then spelled
-- each combination out into its five or six dimension rows (`adfunnel_demographic_keys`) and
-- summed those again. The publisher's users hardly share a combination (a 16,000-event
-- batch held 6,443 in 16,000 rows), so the first sum saved little, and each combination paid
-- for the lateral call and a second hash of its rows. Grouping sets hash each row once per
-- dimension instead. The single users' query alone, on that batch: 1.38 us of backend CPU
-- per event against 1.94, the same 145 rows out; the whole write path's instructions per
-- event, with returning users: 8.6 % fewer (docs/performance.md).
--
-- The dimensions are still defined once for the reports and once here; the age buckets are
-- shared (`adfunnel_age_bucket`), and tests/storage/test_demographic_sets.py holds the two
-- definitions to the same rows.

CREATE FUNCTION adfunnel_age_bucket(age integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT CASE WHEN age < 13 THEN '0-12' WHEN age < 18 THEN '13-17' WHEN age < 25 THEN '18-24'
            WHEN age < 35 THEN '25-34' WHEN age < 45 THEN '35-44' WHEN age < 55 THEN '45-54'
            WHEN age < 65 THEN '55-64' ELSE '65+' END
$$;

CREATE OR REPLACE FUNCTION adfunnel_demographic_keys(
    source text, funnel_stage text, age integer, gender text, country text, city text,
    device text
) RETURNS TABLE (dim text, key1 text, key2 text)
LANGUAGE sql IMMUTABLE AS $$
SELECT k.* FROM (VALUES
    ('age', adfunnel_age_bucket(age), NULL::text),
    ('gender', gender, NULL), ('country', country, NULL), ('city', country, city)
) k WHERE source = 'facebook'
UNION ALL
SELECT k.* FROM (VALUES ('device', device, NULL::text), ('country', country, NULL)) k
WHERE source = 'tiktok' AND funnel_stage = 'top'
$$;

-- A query of signed user counts per (`names`, source, dim, key1, key2, users) of the rows of
-- `rel` (a FROM item with the demographic columns and `sign`): `columns` are the grouping
-- expressions named `names`, computed from `rel`'s columns.
CREATE FUNCTION adfunnel_demographic_sets(rel text, columns text, names text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'SELECT %3$s, ''facebook'' AS source,'
    '  CASE WHEN GROUPING(age_key) = 0 THEN ''age'' WHEN GROUPING(gender) = 0 THEN ''gender'''
    '  WHEN GROUPING(city) = 0 THEN ''city'' ELSE ''country'' END AS dim,'
    '  CASE WHEN GROUPING(age_key) = 0 THEN age_key WHEN GROUPING(gender) = 0 THEN gender'
    '  ELSE country END AS key1, city AS key2, sum(sign) AS users'
    ' FROM (SELECT %2$s, adfunnel_age_bucket(age) AS age_key, gender, country, city, sign'
    '  FROM %1$s WHERE source = ''facebook'') f'
    ' GROUP BY GROUPING SETS ((%3$s, age_key), (%3$s, gender), (%3$s, country),'
    '  (%3$s, country, city))'
    ' UNION ALL'
    ' SELECT %3$s, ''tiktok'', CASE WHEN GROUPING(device) = 0 THEN ''device'''
    '  ELSE ''country'' END, CASE WHEN GROUPING(device) = 0 THEN device ELSE country END,'
    '  NULL, sum(sign)'
    ' FROM (SELECT %2$s, device, country, sign FROM %1$s'
    '  WHERE source = ''tiktok'' AND funnel_stage = ''top'') t'
    ' GROUP BY GROUPING SETS ((%3$s, device), (%3$s, country))',
    rel, columns, names)
$$;

CREATE OR REPLACE FUNCTION adfunnel_single_rollups() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT
    ' demo_delta AS MATERIALIZED (SELECT d.*, pg_backend_pid() AS shard FROM ('
    || adfunnel_demographic_sets('single',
        'date_trunc(''hour'', event_time AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC'' AS bucket',
        'bucket')
    || ') d),'
    ' follower_delta AS MATERIALIZED (SELECT date_trunc(''hour'', event_time AT TIME ZONE ''UTC'')'
    '  AT TIME ZONE ''UTC'' AS bucket, adfunnel_follower_bin(followers) AS bin,'
    '  sum(sign) AS users, coalesce(sum(followers * sign), 0) AS followers,'
    '  pg_backend_pid() AS shard FROM single WHERE source = ''tiktok'' GROUP BY 1, 2),'
    ' demo_hour AS (INSERT INTO demographic_rollup_hour AS r'
    '  SELECT * FROM demo_delta ORDER BY 1, 2, 3, 4, 5'
    '  ON CONFLICT (bucket, source, dim, key1, key2, shard)'
    '  DO UPDATE SET users = r.users + EXCLUDED.users),'
    ' demo_day AS (INSERT INTO demographic_rollup_day AS r'
    '  SELECT date_trunc(''day'', bucket AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC'','
    '  source, dim, key1, key2, sum(users), pg_backend_pid() FROM demo_delta'
    '  GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5'
    '  ON CONFLICT (bucket, source, dim, key1, key2, shard)'
    '  DO UPDATE SET users = r.users + EXCLUDED.users),'
    ' followers_hour AS (INSERT INTO follower_rollup_hour AS r'
    '  SELECT * FROM follower_delta ORDER BY 1, 2'
    '  ON CONFLICT (bucket, bin, shard) DO UPDATE SET users = r.users + EXCLUDED.users,'
    '  followers = r.followers + EXCLUDED.followers),'
    ' followers_day AS (INSERT INTO follower_rollup_day AS r'
    '  SELECT date_trunc(''day'', bucket AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC'', bin,'
    '  sum(users), sum(followers), pg_backend_pid() FROM follower_delta GROUP BY 1, 2'
    '  ORDER BY 1, 2 ON CONFLICT (bucket, bin, shard) DO UPDATE SET users = r.users + EXCLUDED.users,'
    '  followers = r.followers + EXCLUDED.followers)'
    ' SELECT count(*) FROM single'
$$;

CREATE OR REPLACE FUNCTION adfunnel_hour_rollups() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT $q$
 hour_changes AS MATERIALIZED (
    SELECT b.*, -1 AS sign FROM hours_before b UNION ALL SELECT a.*, 1 FROM hours_after a),
 repeat_demo AS (
    INSERT INTO repeat_demographic_rollup AS r
    SELECT d.hour, d.next_day, d.source, d.dim, d.key1, d.key2, pg_backend_pid(), d.users
    FROM ($q$ || adfunnel_demographic_sets('(SELECT * FROM hour_changes WHERE track <> ''t'') c',
        'hour, adfunnel_next_day(next_hour) AS next_day', 'hour, next_day') || $q$) d
    WHERE d.users <> 0
    ORDER BY 1, 2, 3, 4, 5, 6
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
