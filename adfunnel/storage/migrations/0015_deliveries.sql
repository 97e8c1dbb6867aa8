-- What the events of one bus message share is kept once per message (SPEC §8, §9).
--
-- Every event row held its message's correlation id (a 16-byte uuid) and a stored time (8
-- bytes) of its own, and every COPY line carried the correlation id's 36 characters for
-- PostgreSQL to parse again. A message holds thousands of events: one `deliveries` row per
-- message keeps both, and an event finds it by what it keeps anyway for the earliest copy,
-- its received time and stream sequence. `event_traces` reads an event with its trace.
--
-- `stored_at` is now when the message's batch was written, in the same transaction as its
-- events. Rows stored before this migration keep their own columns; the view takes either.
-- A delivery goes when the latest event time among its events has expired (retention).
CREATE TABLE deliveries (
    received_at     timestamptz NOT NULL,
    stream_seq      bigint,
    last_event_time timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    correlation_uuid uuid,
    correlation_id  text,
    -- Rows written without the bus (the seed) have no stream sequence: one per batch.
    CONSTRAINT deliveries_key UNIQUE NULLS NOT DISTINCT (received_at, stream_seq)
);
CREATE INDEX deliveries_expiry_idx ON deliveries (last_event_time);

ALTER TABLE events ALTER COLUMN stored_at DROP NOT NULL, ALTER COLUMN stored_at DROP DEFAULT;

CREATE VIEW event_traces AS
SELECT e.event_id, e.event_time, e.source, e.funnel_stage, e.event_type, e.user_id,
       e.purchase_amount, e.campaign_id, e.age, e.gender, e.country, e.city, e.followers,
       e.device, e.payload, e.payload_json, e.received_at, e.stream_seq,
       coalesce(d.correlation_uuid::text, d.correlation_id,
                e.correlation_uuid::text, e.correlation_id) AS correlation_id,
       coalesce(d.stored_at, e.stored_at) AS stored_at
FROM events e
LEFT JOIN deliveries d
    ON d.received_at = e.received_at AND d.stream_seq IS NOT DISTINCT FROM e.stream_seq;
