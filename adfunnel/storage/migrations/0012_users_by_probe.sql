-- Whether a user is new, from the events themselves (SPEC §8, §9).
--
-- Since 0006 every (source, user) had a row of state: its event count and, while that was
-- one, its eventId. With new users for nearly every event that was a row and an index entry
-- per event (224 of the 761 bytes an event took on disk) and an upsert, two descents of a
-- text index, per event. What the triggers need is less: whether a user had no, one, or
-- several events before, and the one event's id. A hash index on the events' user id answers
-- that with a probe for at most two other events of the user: O(1) whatever the user's
-- history, about 20 bytes per event.
--
-- Two things the state rows did implicitly are now explicit:
-- * Order. A probe does not see another writer's uncommitted events, so writers of the same
--   source take turns in this trigger: an advisory lock per source, in source order, held to
--   commit. Each then sees everything committed before it. Facebook and TikTok writers still
--   run side by side, and the COPY and insert before the trigger run in parallel for all.
-- * Partial views. The writers' `INSERT … ON CONFLICT DO UPDATE` fires the update statement
--   trigger (the replaced rows), then the insert one (the new rows). Counters added up; a
--   probe sees the table after the whole statement. So the update trigger leaves out the
--   rows the same statement inserted (same xmin and cmin as its own new rows), and the insert
--   trigger, which runs last, sees everything else as it is.

CREATE INDEX events_user_idx ON events USING hash (user_id);

-- The (xmin, cmin) of the command that wrote the rows of `rel` (a transition table of new
-- rows): every row the same command inserted or updated carries it.
CREATE FUNCTION adfunnel_written_by(rel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    '(SELECT e.xmin::text AS x, e.cmin::text AS c FROM events e'
    ' WHERE e.event_id = (SELECT event_id FROM %s LIMIT 1))', rel)
$$;

-- The probe's condition that leaves out what `own` wrote, or nothing.
CREATE FUNCTION adfunnel_not_own(others boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT CASE WHEN others
    THEN ' AND (e.xmin::text, e.cmin::text) NOT IN (SELECT x, c FROM own)' ELSE '' END
$$;

-- Step 1 of adding rows (`rel`: a transition table): for each user of the batch, how many
-- events they had besides the batch's (0, 1, or 2 meaning "two or more") and, when one, its
-- eventId; rows written by the same command are left out when `others` says so (the update
-- trigger). Returns, as arrays, the users that now have two or more events.
DROP FUNCTION adfunnel_count_added(text);
CREATE FUNCTION adfunnel_count_added(rel text, others boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH batch AS (SELECT source, user_id, count(*) AS n FROM %1$s GROUP BY 1, 2),'
    ' own AS MATERIALIZED %2$s,'
    ' probed AS (SELECT b.source, b.user_id, b.n, p.before, p.first FROM batch b'
    '  CROSS JOIN LATERAL (SELECT count(*) AS before, min(x.event_id) AS first FROM'
    '   (SELECT e.event_id FROM events e WHERE e.user_id = b.user_id'
    '    AND e.source = b.source AND e.event_id NOT IN (SELECT event_id FROM %1$s)%3$s'
    '    LIMIT 2) x) p)'
    ' SELECT array_agg(source), array_agg(user_id), array_agg(before), array_agg(first)'
    ' FROM probed WHERE before + n >= 2', rel, adfunnel_written_by(rel), adfunnel_not_own(others))
$$;

-- Step 1 of removing rows (`rel`), after the removal: how many events each touched user has
-- left (0, 1, or 2 meaning "two or more") and so how many before. `kept`: an earliest-copy
-- replacement's new rows, which step 1 of adding counts; `others` as above.
DROP FUNCTION adfunnel_count_removed(text);
CREATE FUNCTION adfunnel_count_removed(rel text, kept text, others boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'WITH delta AS (SELECT source, user_id, count(*) AS n FROM %1$s GROUP BY 1, 2),'
    ' own AS MATERIALIZED %3$s,'
    ' probed AS (SELECT d.source, d.user_id, d.n, p.after FROM delta d'
    '  CROSS JOIN LATERAL (SELECT count(*) AS after FROM'
    '   (SELECT 1 FROM events e WHERE e.user_id = d.user_id AND e.source = d.source'
    '    AND e.event_id NOT IN (SELECT event_id FROM %2$s)%4$s'
    '    LIMIT 2) x) p)'
    ' SELECT array_agg(source), array_agg(user_id), array_agg(after + n), array_agg(after)'
    ' FROM probed', rel, kept, adfunnel_written_by(kept), adfunnel_not_own(others))
$$;

-- 0007's step 2 of removing rows, without the state rows it kept up to date.
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

CREATE OR REPLACE FUNCTION adfunnel_apply_demographics() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sources text[];
    users text[];
    before bigint[];
    after bigint[];
    firsts text[];
BEGIN
    -- One writer per source at a time from here to commit, in source order (a retention
    -- batch holds both sources' events).
    EXECUTE format('SELECT array_agg(DISTINCT source ORDER BY source) FROM (%s) s',
        CASE TG_OP WHEN 'INSERT' THEN 'SELECT source FROM new_rows'
                   WHEN 'DELETE' THEN 'SELECT source FROM old_rows'
                   ELSE 'SELECT source FROM new_rows UNION ALL SELECT source FROM old_rows' END)
    INTO sources;
    PERFORM pg_advisory_xact_lock(hashtext('adfunnel demographics ' || s))
    FROM unnest(sources) AS s ORDER BY s;
    IF TG_OP = 'DELETE' THEN
        EXECUTE adfunnel_count_removed('old_rows', 'old_rows', false)
        INTO sources, users, before, after;
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE adfunnel_count_removed('old_rows', 'new_rows', true)
        INTO sources, users, before, after;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') AND sources IS NOT NULL THEN
        EXECUTE adfunnel_apply_removed('old_rows') USING sources, users, before, after;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE adfunnel_count_added('new_rows', TG_OP = 'UPDATE')
        INTO sources, users, before, firsts;
        EXECUTE adfunnel_apply_added('new_rows') USING sources, users, before, firsts;
    END IF;
    RETURN NULL;
END
$$
-- Each statement is planned anew for every call: JIT-compiling one costs more than running it.
-- Every lookup into a stored table is a handful of rows through an index; a plan from stale
-- statistics must never scan `events` or `repeat_user_events` whole instead. Nor a bitmap:
-- for a user with 100,000 events it would collect all of them before the probe's LIMIT 2.
SET jit = off SET enable_seqscan = off SET enable_bitmapscan = off;

DROP TABLE demographic_users;
