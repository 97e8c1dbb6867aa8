-- Since the rollups (0002, 0003), reports read raw events only at the edges of a range: less
-- than a minute (events, revenue) or an hour (demographics) of rows, found through the time
-- index. These two indexes cost every insert about a tenth of its time (measured: 16,000-event
-- batches, 0.55 s with them, 0.50 s without) and only ever served range scans the time index
-- already answers; worse, the planner ANDed the source one into edge scans, reading a bitmap
-- of every event of a source.
DROP INDEX IF EXISTS events_kind_time_idx;
DROP INDEX IF EXISTS events_campaign_time_idx;
