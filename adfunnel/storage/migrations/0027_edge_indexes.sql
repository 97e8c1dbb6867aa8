-- Indexes for the demographics' reads at a range's ragged edges (SPEC §4, §8).
--
-- At 10 M events with 30 % returning users, a range with two ragged edges spent most of its
-- time outside the rollups (docs/performance.md, "Reads at the edges (migration 0027)"):
-- - Whether each edge event's user has hour rows was one probe of the key per event (55,290
--   probes, 438 ms). A user with hour rows has one for every hour they were active in, so
--   the users with hour rows at an edge are the hour rows of the edge's hours: one range of
--   an index on the hour, hashed once.
-- - The edge was read by time alone, both sources, and then held to one: half the heap pages
--   read for nothing. The source as the time index's second column keeps each query to its
--   own source's rows.
-- - The users whose next active hour falls after a range's whole hours were found by that
--   next hour alone, then held to the range's hours on the heap: 38,892 pages for 10,304
--   rows. With the hour in the index, only the rows kept are read.

CREATE INDEX repeat_user_hours_hour_idx ON repeat_user_hours (track, hour, user_id);

DROP INDEX repeat_user_hours_next_idx;
-- Finite links only, as in 0022: most hour rows are a user's last and link to infinity.
CREATE INDEX repeat_user_hours_next_idx ON repeat_user_hours (track, next_hour, hour)
    WHERE next_hour < 'infinity';

DROP INDEX events_time_idx;
CREATE INDEX events_time_idx ON events (event_time, source);
