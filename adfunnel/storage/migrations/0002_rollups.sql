-- Per-bucket counts and revenue, kept in the same transaction as the raw rows by statement
-- triggers, so reports add up whole minutes/hours/days instead of scanning millions of rows
-- and read raw rows only at the ragged edges of a range. Exact by construction: an insert
-- adds its rows, an earliest-copy replacement subtracts the old row and adds the new one, a
-- delete subtracts.
CREATE TABLE event_rollup_minute (
    bucket        timestamptz NOT NULL,
    source        text NOT NULL,
    funnel_stage  text NOT NULL,
    event_type    text NOT NULL,
    campaign_id   text NOT NULL,          -- '' when the event has none
    events        bigint NOT NULL,
    revenue       numeric NOT NULL,       -- purchaseAmount of revenue events only
    transactions  bigint NOT NULL,        -- revenue events with an amount
    PRIMARY KEY (bucket, source, funnel_stage, event_type, campaign_id)
);
CREATE TABLE event_rollup_hour (LIKE event_rollup_minute INCLUDING ALL);
CREATE TABLE event_rollup_day (LIKE event_rollup_minute INCLUDING ALL);

-- The one statement that adds signed rows (`delta`: event columns plus `sign`) to the
-- rollup of one grain. Sorted, so concurrent writers lock rollup rows in the same order.
CREATE FUNCTION adfunnel_rollup_statement(grain text, delta text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'INSERT INTO %I AS r (bucket, source, funnel_stage, event_type, campaign_id,'
    ' events, revenue, transactions)'
    ' SELECT date_trunc(%L, event_time AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC'','
    '  source, funnel_stage, event_type, coalesce(campaign_id, ''''), sum(sign),'
    '  coalesce(sum(purchase_amount * sign) FILTER (WHERE rev), 0),'
    '  coalesce(sum(sign) FILTER (WHERE rev), 0)'
    ' FROM (SELECT d.*, ((source = ''facebook'' AND event_type = ''checkout.complete'')'
    '   OR (source = ''tiktok'' AND event_type = ''purchase''))'
    '   AND purchase_amount IS NOT NULL AS rev FROM (%s) d) x'
    ' GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5'
    ' ON CONFLICT (bucket, source, funnel_stage, event_type, campaign_id) DO UPDATE SET'
    '  events = r.events + EXCLUDED.events, revenue = r.revenue + EXCLUDED.revenue,'
    '  transactions = r.transactions + EXCLUDED.transactions',
    'event_rollup_' || grain, grain, delta)
$$;

CREATE FUNCTION adfunnel_apply_rollups() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    grain text;
    columns constant text := 'event_time, source, funnel_stage, event_type, campaign_id,'
                             || ' purchase_amount';
    delta text;
BEGIN
    -- Writers update the same few rollup rows (the current minute) all the time; one at a
    -- time, until commit, so they queue for a moment instead of deadlocking.
    PERFORM pg_advisory_xact_lock(183434241);  -- any constant; the project's rollup lock
    delta := CASE TG_OP
        WHEN 'INSERT' THEN format('SELECT %s, 1 AS sign FROM new_rows', columns)
        WHEN 'DELETE' THEN format('SELECT %s, -1 AS sign FROM old_rows', columns)
        ELSE format('SELECT %s, 1 AS sign FROM new_rows UNION ALL SELECT %s, -1 FROM old_rows',
                    columns, columns)
    END;
    FOREACH grain IN ARRAY ARRAY['minute', 'hour', 'day'] LOOP
        EXECUTE adfunnel_rollup_statement(grain, delta);
    END LOOP;
    RETURN NULL;
END
$$;

-- Rows stored before this migration are added once.
DO $$
DECLARE grain text;
BEGIN
    FOREACH grain IN ARRAY ARRAY['minute', 'hour', 'day'] LOOP
        EXECUTE adfunnel_rollup_statement(grain, 'SELECT *, 1 AS sign FROM events');
    END LOOP;
END
$$;

CREATE TRIGGER events_rollup_insert AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_rollups();
CREATE TRIGGER events_rollup_update AFTER UPDATE ON events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_rollups();
CREATE TRIGGER events_rollup_delete AFTER DELETE ON events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION adfunnel_apply_rollups();
