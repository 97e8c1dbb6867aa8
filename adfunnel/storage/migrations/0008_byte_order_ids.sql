-- Event and user ids compare byte-wise everywhere (the write path's cost, SPEC §8).
--
-- Every batch probes the eventId index twice per event (the ON CONFLICT check, then the
-- insert), and the database's default collation (C.UTF-8 here, often en_US.UTF-8) compares
-- text through strcoll: profiled under the publisher's load, those comparisons were most of
-- the uniqueness check, a fifth of PostgreSQL's CPU. Ids are opaque: byte order is a valid
-- order, gives the same equality, and for UTF-8 it is the code point order that C.UTF-8
-- collates by and that the tie-breaks on eventId (latest event per user) already assumed.
-- Sorts by id (the batch's DISTINCT ON, the triggers' GROUP BY user) use abbreviated keys
-- again. One collation for every copy of an id, so that joins and unions between the tables
-- never mix two. Only the indexes on these columns are rebuilt, not the tables.
ALTER TABLE events
    ALTER COLUMN event_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE repeat_user_events
    ALTER COLUMN event_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE repeat_user_hours ALTER COLUMN event_id TYPE text COLLATE "C";
ALTER TABLE demographic_users ALTER COLUMN first_event_id TYPE text COLLATE "C";
ALTER TABLE rejected_events ALTER COLUMN event_id TYPE text COLLATE "C";
