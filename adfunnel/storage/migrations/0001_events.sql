-- Accepted events, one row per eventId forever: the primary key is what makes
-- at-least-once delivery store each event exactly once.
CREATE TABLE events (
    event_id        text PRIMARY KEY,
    event_time      timestamptz NOT NULL,
    source          text NOT NULL,
    funnel_stage    text NOT NULL,
    event_type      text NOT NULL,
    user_id         text NOT NULL,
    purchase_amount numeric,
    campaign_id     text,
    ad_id           text,
    age             integer,
    gender          text,
    country         text,
    city            text,
    followers       bigint,
    device          text,
    action_time     timestamptz,
    payload         jsonb NOT NULL,
    correlation_id  text,
    received_at     timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    stream_seq      bigint
);

-- The report filters: a time range, optionally narrowed by source/stage/type or campaign.
CREATE INDEX events_time_idx ON events (event_time);
CREATE INDEX events_kind_time_idx ON events (source, funnel_stage, event_type, event_time);
CREATE INDEX events_campaign_time_idx ON events (campaign_id, event_time)
    WHERE campaign_id IS NOT NULL;

-- Events that failed validation or could never be written: kept for inspection and replay.
CREATE TABLE rejected_events (
    id              bigserial PRIMARY KEY,
    dedup_key       text NOT NULL UNIQUE,
    event_id        text,
    source          text,
    reason          text NOT NULL,
    batch_index     integer,
    payload         jsonb,
    raw             text,
    correlation_id  text,
    received_at     timestamptz NOT NULL,
    rejected_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX rejected_received_idx ON rejected_events (received_at);
CREATE INDEX rejected_reason_idx ON rejected_events (reason);
