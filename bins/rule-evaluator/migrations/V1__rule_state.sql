-- adpipe rule-evaluator state. Every change is written in the same statement as the input
-- offset it reflects, so a replayed record is recognised and its alerts re-emitted as first
-- decided, never decided twice.

-- The next input offset to apply, per input partition (gold.data.ready, config.changes).
CREATE TABLE IF NOT EXISTS rules_offsets (
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Per entity (a campaign, or one of its line items; '' = the campaign): the alert state of
-- each rule and the daily metric history of the trailing rules, as one JSON document.
CREATE TABLE IF NOT EXISTS rules_entities (
    org_id       bigint      NOT NULL,
    campaign_id  text        NOT NULL,
    line_item_id text        NOT NULL,
    state        jsonb       NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, campaign_id, line_item_id)
);

-- An org's own rules from config.changes, versioned per rule; a delete is a tombstone (which
-- also switches off a built-in rule with the same id for that org).
CREATE TABLE IF NOT EXISTS rules_definitions (
    org_id     bigint      NOT NULL,
    rule_id    text        NOT NULL,
    version    bigint      NOT NULL,
    deleted    boolean     NOT NULL,
    definition jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, rule_id)
);

-- The alerts decided for an input record, kept so a replay of that record (a crash after the
-- decision, before its offset was committed) emits the same alerts again.
CREATE TABLE IF NOT EXISTS rules_outbox (
    topic        text        NOT NULL,
    partition    int         NOT NULL,
    input_offset bigint      NOT NULL,
    alerts       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, input_offset)
);
CREATE INDEX IF NOT EXISTS rules_outbox_created ON rules_outbox (created_at);
