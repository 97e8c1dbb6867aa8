-- A writer's `INSERT … ON CONFLICT DO UPDATE` fires the update triggers as well as the insert
-- ones, and nearly always on no rows: a stored row is replaced only when an earlier copy of
-- its eventId commits late. Their statements were still planned and run on empty transition
-- tables: 3.5 ms of the 7 ms a batch of one event costs on a connection that has written
-- before (`EXPLAIN ANALYZE`: demographics 3.0, rollups 0.5; twice that on its first batch),
-- ~0.3 us per event in 12,000-event batches. A trigger with no rows now returns at once;
-- the two functions are otherwise those of 0009 and 0012.
CREATE OR REPLACE FUNCTION adfunnel_apply_rollups() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    columns constant text := 'event_time, source, funnel_stage, event_type, campaign_id,'
                             || ' purchase_amount';
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('adfunnel.retention', true) = 'on' THEN
        RETURN NULL;
    END IF;
    -- An update's two tables hold the same number of rows.
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT FROM old_rows) THEN
            RETURN NULL;
        END IF;
    ELSIF NOT EXISTS (SELECT FROM new_rows) THEN
        RETURN NULL;
    END IF;
    EXECUTE adfunnel_rollups_statement(CASE TG_OP
        WHEN 'INSERT' THEN format('SELECT %s, 1 AS sign FROM new_rows', columns)
        WHEN 'DELETE' THEN format('SELECT %s, -1 AS sign FROM old_rows', columns)
        ELSE format('SELECT %s, 1 AS sign FROM new_rows UNION ALL SELECT %s, -1 FROM old_rows',
                    columns, columns)
    END);
    RETURN NULL;
END
$$
-- CREATE OR REPLACE resets a function's settings: 0009's are set again.
SET jit = off;

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
    IF sources IS NULL THEN
        RETURN NULL;  -- no rows
    END IF;
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
-- As 0012 set them.
SET jit = off SET enable_seqscan = off SET enable_bitmapscan = off;
