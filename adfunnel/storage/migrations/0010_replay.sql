-- Replay of rejected events (SPEC §11): each row records when it was last sent through the
-- gateway again, under which correlation id, and what became of it: `stored`, `duplicate`
-- (its eventId was stored already), `accepted` (promised, not yet written when the replay
-- looked), or `rejected: <reason>`.
ALTER TABLE rejected_events
    ADD COLUMN replayed_at timestamptz,
    ADD COLUMN replay_correlation_id text,
    ADD COLUMN replay_outcome text;
