-- Retention (SPEC §10): raw events older than RETENTION_DAYS are deleted in bounded batches,
-- while the count rollups keep their numbers, so whole minutes, hours and days of an expired
-- range still answer the events and revenue reports. The deleting session says so with
-- `SET LOCAL adfunnel.retention = 'on'`; any other delete (or an earliest-copy replacement)
-- still takes its rows off the rollups, as before. The demographics trigger is unchanged:
-- demographics stay those of the events kept.
CREATE OR REPLACE FUNCTION adfunnel_apply_rollups() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    columns constant text := 'event_time, source, funnel_stage, event_type, campaign_id,'
                             || ' purchase_amount';
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('adfunnel.retention', true) = 'on' THEN
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
-- CREATE OR REPLACE resets a function's settings: 0003's one is set again.
SET jit = off;
