-- 0007's tail of the hour rows' rollups, with the combinations that cancel out dropped before
-- they are spread over the dimensions.
--
-- An hour row rewritten without a change that the rollups see (a returning user's later
-- event in the same hour: a Facebook user keeps every attribute, a TikTok user their device
-- and country) appears in `hour_changes` twice, as it was (-1) and as it is (+1), and its
-- combination sums to 0. 0007 expanded such combinations into their five or six dimension
-- rows, sorted and summed them with the rest, and only then dropped the zero sums. Dropped
-- here instead, as soon as they are summed: the same rows reach the rollups, as every group
-- of `repeat_demo` that held only cancelled combinations summed to 0 and was dropped anyway.
CREATE OR REPLACE FUNCTION adfunnel_hour_rollups() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT $q$
 hour_changes AS MATERIALIZED (
    SELECT b.*, -1 AS sign FROM hours_before b UNION ALL SELECT a.*, 1 FROM hours_after a),
 hour_combos AS (
    SELECT hour, adfunnel_next_day(next_hour) AS next_day, source, funnel_stage, age, gender,
           country, city, device, sum(sign) AS users
    FROM hour_changes WHERE track <> 't' GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    HAVING sum(sign) <> 0),
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
