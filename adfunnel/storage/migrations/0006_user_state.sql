-- The write path costs the same per event whatever is stored (SPEC §3, §8).
--
-- Until now the demographics trigger read every stored event of every user a batch touched
-- (through a hash index on user_id), to count how many events each user has: a batch of a
-- user with 100,000 events read 100,000 rows, and the writers took turns on one advisory
-- lock. Now each (source, user) has one row of state with its event count. A batch adds its
-- counts to those rows, and only users whose count crosses from one to several (or back)
-- move between the single-user rollups and `repeat_user_events`; the one stored event such
-- a user had is found by its eventId. Row locks on the state rows order concurrent writers
-- per user instead of one lock for everything.

-- Nothing queries inside the payload: `json` keeps the text as sent after checking it is
-- JSON, where `jsonb` builds a binary tree (measured: a COPY of ~420-byte payloads costs
-- 2.5 µs per row into json, 5.7 µs into jsonb).
ALTER TABLE events ALTER COLUMN payload TYPE json USING payload::json;

DROP FUNCTION adfunnel_demographic_statement(text, text);
DROP INDEX events_user_idx;

-- One row per (source, user): how many events of theirs are stored, and while that is one,
-- which event it is. `added` is how many the latest write added, so that the upsert can
-- return the count before it without joining its input back. Byte-wise collation: ids are
-- opaque, and C compares fastest.
CREATE TABLE demographic_users (
    source          text COLLATE "C" NOT NULL,
    user_id         text COLLATE "C" NOT NULL,
    events          bigint NOT NULL CHECK (events >= 0),
    added           bigint NOT NULL,
    first_event_id  text NOT NULL,
    PRIMARY KEY (source, user_id)
);
INSERT INTO demographic_users
SELECT source, user_id, count(*), count(*), min(event_id) FROM events GROUP BY 1, 2;

-- A user falling back to one event (a delete) finds that event among their copies.
CREATE INDEX repeat_user_events_user_idx ON repeat_user_events (source, user_id);

-- Rollup rows per writing connection (`shard`: its backend pid). Every batch adds to the
-- rows of the current minute, hour and day: shared by all writers, those rows made them take
-- turns until commit. With a shard each connection adds to rows of its own, so writers run
-- side by side and never deadlock on rollups; reports sum over shards as they already sum
-- over buckets. The rows multiply by the connections that wrote in a bucket, a handful.
DO $$
DECLARE
    t text;
    key_name text;
    keys text;
BEGIN
    FOREACH t IN ARRAY ARRAY['event_rollup_minute', 'event_rollup_hour', 'event_rollup_day',
                             'demographic_rollup_hour', 'demographic_rollup_day',
                             'follower_rollup_hour', 'follower_rollup_day'] LOOP
        SELECT c.conname, string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
        INTO key_name, keys
        FROM pg_constraint c
        CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k (attnum, n)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
        WHERE c.conrelid = t::regclass AND c.contype IN ('p', 'u')
        GROUP BY c.conname;
        EXECUTE format('ALTER TABLE %I ADD COLUMN shard integer NOT NULL DEFAULT 0,'
                       ' DROP CONSTRAINT %I, ADD UNIQUE NULLS NOT DISTINCT (%s, shard)',
                       t, key_name, keys);
    END LOOP;
END
$$;

-- Hour or day changes summed from the finer grain's.
CREATE FUNCTION adfunnel_rollup_sum(grain text, finer text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'SELECT date_trunc(%L, bucket AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC'' AS bucket,'
    ' source, funnel_stage, event_type, campaign_id, sum(events) AS events,'
    ' sum(revenue) AS revenue, sum(transactions) AS transactions FROM %I GROUP BY 1, 2, 3, 4, 5',
    grain, finer)
$$;

-- Add one grain's changes to its rollup rows of this connection's shard.
CREATE FUNCTION adfunnel_rollup_upsert(grain text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'INSERT INTO %I AS r (bucket, source, funnel_stage, event_type, campaign_id, shard,'
    ' events, revenue, transactions)'
    ' SELECT bucket, source, funnel_stage, event_type, campaign_id, pg_backend_pid(),'
    ' events, revenue, transactions FROM %I'
    ' ON CONFLICT (bucket, source, funnel_stage, event_type, campaign_id, shard) DO UPDATE SET'
    '  events = r.events + EXCLUDED.events, revenue = r.revenue + EXCLUDED.revenue,'
    '  transactions = r.transactions + EXCLUDED.transactions',
    'event_rollup_' || grain, grain)
$$;

-- One statement for the three grains: the batch is read once into per-minute changes, and
-- the hours and days are summed from those few rows instead of from the batch again.
CREATE FUNCTION adfunnel_rollups_statement(delta text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH minute AS MATERIALIZED (SELECT date_trunc(''minute'', event_time AT TIME ZONE ''UTC'')'
    '  AT TIME ZONE ''UTC'' AS bucket, source, funnel_stage, event_type,'
    '  coalesce(campaign_id, '''') AS campaign_id, sum(sign) AS events,'
    '  coalesce(sum(purchase_amount * sign) FILTER (WHERE rev), 0) AS revenue,'
    '  coalesce(sum(sign) FILTER (WHERE rev), 0) AS transactions'
    '  FROM (SELECT d.*, ((source = ''facebook'' AND event_type = ''checkout.complete'')'
    '   OR (source = ''tiktok'' AND event_type = ''purchase''))'
    '   AND purchase_amount IS NOT NULL AS rev FROM (%1$s) d) x GROUP BY 1, 2, 3, 4, 5),'
    ' hour AS MATERIALIZED (%2$s),'
    ' day AS (%3$s),'
    ' m AS (%4$s), h AS (%5$s), d AS (%6$s)'
    ' SELECT count(*) FROM minute',
    delta,
    adfunnel_rollup_sum('hour', 'minute'),
    adfunnel_rollup_sum('day', 'hour'),
    adfunnel_rollup_upsert('minute'),
    adfunnel_rollup_upsert('hour'),
    adfunnel_rollup_upsert('day'))
$$;

-- No lock any more: the upserts only add, each connection to rows of its own shard.
CREATE OR REPLACE FUNCTION adfunnel_apply_rollups() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    columns constant text := 'event_time, source, funnel_stage, event_type, campaign_id,'
                             || ' purchase_amount';
BEGIN
    EXECUTE adfunnel_rollups_statement(CASE TG_OP
        WHEN 'INSERT' THEN format('SELECT %s, 1 AS sign FROM new_rows', columns)
        WHEN 'DELETE' THEN format('SELECT %s, -1 AS sign FROM old_rows', columns)
        ELSE format('SELECT %s, 1 AS sign FROM new_rows UNION ALL SELECT %s, -1 FROM old_rows',
                    columns, columns)
    END);
    RETURN NULL;
END
$$
-- CREATE OR REPLACE resets a function's settings: 0003's one is set again.
SET jit = off;
DROP FUNCTION adfunnel_rollup_statement(text, text);

-- Declared STRICT, these SQL functions could not be inlined (PostgreSQL cannot prove their
-- CASE bodies strict), so every call ran as a statement of its own: 16 µs per TikTok event
-- in the trigger below. The same bodies, inlinable; NULL still gives NULL.
CREATE OR REPLACE FUNCTION adfunnel_follower_bin(followers bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
SELECT CASE WHEN followers < 100 THEN followers
            ELSE followers - followers % (10::numeric ^ (length(followers::text) - 2))::bigint END
$$;

CREATE OR REPLACE FUNCTION adfunnel_follower_bin_end(bin bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
SELECT CASE WHEN bin < 100 THEN bin + 1
            ELSE bin + (10::numeric ^ (length(bin::text) - 2))::bigint END
$$;

CREATE OR REPLACE FUNCTION adfunnel_follower_bucket(followers bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT CASE WHEN followers < 1000 THEN '0-999' WHEN followers < 10000 THEN '1000-9999'
            WHEN followers < 100000 THEN '10000-99999'
            WHEN followers < 1000000 THEN '100000-999999' ELSE '1000000+' END
$$;

-- The columns a demographics row carries, in `repeat_user_events` order.
CREATE FUNCTION adfunnel_demographic_columns(alias text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT string_agg(format('%I.%I', alias, c), ', ' ORDER BY n)
FROM unnest(ARRAY['event_id', 'source', 'user_id', 'event_time', 'received_at', 'funnel_stage',
                  'age', 'gender', 'country', 'city', 'followers', 'device']) WITH ORDINALITY
     AS t (c, n)
$$;

-- The tail of both statements below: `single` (demographics columns and a `sign`: +1 a user
-- that now has exactly one event, -1 one that no longer has) becomes signed changes of the
-- single-user rollups, hour and day, in the connection's shard.
CREATE FUNCTION adfunnel_single_rollups() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT
    -- Users with the same attributes in the same hour first: their keys are then spelled
    -- out once per combination instead of once per user.
    ' combos AS (SELECT date_trunc(''hour'', event_time AT TIME ZONE ''UTC'')'
    '  AT TIME ZONE ''UTC'' AS bucket, source, funnel_stage, age, gender, country, city,'
    '  device, sum(sign) AS users FROM single GROUP BY 1, 2, 3, 4, 5, 6, 7, 8),'
    ' demo_delta AS MATERIALIZED (SELECT c.bucket, c.source, k.dim, k.key1, k.key2,'
    '  sum(c.users) AS users, pg_backend_pid() AS shard'
    '  FROM combos c CROSS JOIN LATERAL adfunnel_demographic_keys(c.source, c.funnel_stage,'
    '  c.age, c.gender, c.country, c.city, c.device) k GROUP BY 1, 2, 3, 4, 5),'
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

-- Step 1 of adding rows (`rel`: a transition table): add each user's new events to their
-- count. The upsert waits for a concurrent writer of the same user and then sees its
-- committed count, so "how many before" is exact without a global lock. Returns, as arrays,
-- the users that now have two or more events: how many they had before, and the eventId of
-- their one event when that was one.
CREATE FUNCTION adfunnel_count_added(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH up AS (INSERT INTO demographic_users AS u (source, user_id, events, added,'
    '  first_event_id)'
    '  SELECT source, user_id, count(*), count(*), min(event_id) FROM %1$s'
    '  GROUP BY 1, 2 ORDER BY 1, 2'
    '  ON CONFLICT (source, user_id) DO UPDATE SET events = u.events + EXCLUDED.events,'
    '  added = EXCLUDED.added'
    '  RETURNING u.source, u.user_id, u.events - u.added AS before, u.events AS after,'
    '  u.first_event_id)'
    ' SELECT array_agg(source), array_agg(user_id), array_agg(before), array_agg(first_event_id)'
    ' FROM up WHERE after >= 2', rel)
$$;

-- Step 2 of adding rows, in a statement of its own so that it sees what concurrent writers
-- committed while step 1 waited for them: rows of users with one event go to the rollups;
-- rows of users with several go to `repeat_user_events`, joined there by the one event of
-- each user who had exactly one (it leaves the rollups). Reads one stored event per user
-- that crossed from one to several, never a user's history.
CREATE FUNCTION adfunnel_apply_added(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH multi AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],'
    '  $4::text[]) AS m (source, user_id, before, first_event_id)),'
    ' moved AS MATERIALIZED (SELECT %3$s FROM multi m JOIN events e'
    '  ON e.event_id = m.first_event_id WHERE m.before = 1),'
    -- The batch is read twice rather than copied once: hashed membership tests split it,
    -- linear whatever the planner guesses of the sizes.
    ' copies AS (INSERT INTO repeat_user_events AS c'
    '  SELECT %2$s FROM %1$s r WHERE (r.source, r.user_id) IN (SELECT source, user_id FROM multi)'
    '  UNION ALL SELECT * FROM moved'
    '  ON CONFLICT (event_id) DO UPDATE SET (%4$s) = ROW(%5$s)),'
    ' single AS (SELECT %2$s, 1 AS sign FROM %1$s r'
    '  WHERE (r.source, r.user_id) NOT IN (SELECT source, user_id FROM multi)'
    '  UNION ALL SELECT *, -1 FROM moved),'
    '%6$s',
    rel,
    adfunnel_demographic_columns('r'),
    adfunnel_demographic_columns('e'),
    replace(adfunnel_demographic_columns('c'), 'c.', ''),
    adfunnel_demographic_columns('excluded'),
    adfunnel_single_rollups())
$$;

-- Step 1 of removing rows: take each user's removed events off their count. Returns every
-- touched user with their count before and after.
CREATE FUNCTION adfunnel_count_removed(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH delta AS (SELECT source, user_id, count(*) AS n FROM %1$s GROUP BY 1, 2),'
    ' up AS (UPDATE demographic_users u SET events = u.events - d.n FROM delta d'
    '  WHERE (u.source, u.user_id) = (d.source, d.user_id)'
    '  RETURNING u.source, u.user_id, u.events + d.n AS before, u.events AS after)'
    ' SELECT array_agg(source), array_agg(user_id), array_agg(before), array_agg(after) FROM up',
    rel)
$$;

-- Step 2 of removing rows: a removed single event leaves the rollups; removed copies leave
-- `repeat_user_events`; a user left with one event has it moved back to the rollups (found
-- among their copies, which hold no more than what was removed plus that one).
CREATE FUNCTION adfunnel_apply_removed(rel text) RETURNS text
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
    ' single AS (SELECT %4$s, -1 AS sign FROM removed d WHERE before = 1'
    '  UNION ALL SELECT *, 1 FROM back),'
    '%5$s',
    rel,
    adfunnel_demographic_columns('r'),
    adfunnel_demographic_columns('c'),
    adfunnel_demographic_columns('d'),
    adfunnel_single_rollups())
$$;

-- An earliest-copy replacement (UPDATE) is its old rows removed, then its new rows added.
-- Replaced in place: the triggers of 0003 keep calling it. Its settings are replaced too
-- (0005 turned nested loops off for the old statement; the lookups here need them).
CREATE OR REPLACE FUNCTION adfunnel_apply_demographics() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sources text[];
    users text[];
    before bigint[];
    after bigint[];
    firsts text[];
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        EXECUTE adfunnel_count_removed('old_rows') INTO sources, users, before, after;
        IF sources IS NOT NULL THEN
            EXECUTE adfunnel_apply_removed('old_rows') USING sources, users, before, after;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE adfunnel_count_added('new_rows') INTO sources, users, before, firsts;
        EXECUTE adfunnel_apply_added('new_rows') USING sources, users, before, firsts;
    END IF;
    RETURN NULL;
END
$$
-- Each statement is planned anew for every call: JIT-compiling one costs more than running it.
-- Every lookup into a stored table is a handful of rows through an index; a plan from stale
-- statistics must never scan `events` or `repeat_user_events` whole instead.
SET jit = off SET enable_seqscan = off;
