-- The exact minimum, median and maximum of TikTok followers read the events of a few
-- follower bins in the range (`follower_stats`), through an index of (followers,
-- event_time): 22 bytes per stored event of the publisher's mix, where no two keys are
-- equal. Keyed by the event's hour instead, the users of a bin in one hour share a key,
-- which PostgreSQL keeps once with a list of rows; the range is then matched by hour in
-- the index and to the microsecond on the rows, as it was on their user ids before.
DROP INDEX events_tiktok_followers_idx;
CREATE INDEX events_tiktok_followers_idx
    ON events (followers, (date_trunc('hour', event_time AT TIME ZONE 'UTC')))
    WHERE source = 'tiktok';
