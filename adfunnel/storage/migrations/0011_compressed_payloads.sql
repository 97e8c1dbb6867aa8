-- Event payloads compressed (SPEC §9): the JSON was two thirds of every stored event. From
-- now on the gateway sends each payload as a zstd frame (storage/_payloads.py) and `payload`
-- holds it as it comes; rows stored before keep their JSON in `payload_json`, which readers
-- use when `payload` is NULL. An earliest-copy replacement of such a row writes `payload`
-- and clears `payload_json`. Nothing in PostgreSQL reads inside a payload.
ALTER TABLE events RENAME COLUMN payload TO payload_json;
ALTER TABLE events ALTER COLUMN payload_json DROP NOT NULL;
ALTER TABLE events ADD COLUMN payload bytea;
-- NOT VALID: every row stored so far has its JSON; only new rows need the check.
ALTER TABLE events ADD CONSTRAINT events_payload_kept
    CHECK (payload IS NOT NULL OR payload_json IS NOT NULL) NOT VALID;
