-- The event ids of the aggregates evaluated, kept (as long as the outbox) so that an
-- aggregate gold emits again under the same event id at a later offset (gold killed after
-- producing it, before committing its input) is not evaluated a second time, even when the
-- dedupe store is down or was in memory.
CREATE TABLE IF NOT EXISTS rules_applied (
    event_id   uuid        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rules_applied_created ON rules_applied (created_at);
