-- adpipe audit trail: one row per audit.events event, keyed by its event_id.
CREATE TABLE IF NOT EXISTS audit_events (
    event_id        uuid        PRIMARY KEY,
    org_id          bigint      NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    action          text        NOT NULL,
    category        text        NOT NULL,
    outcome         text        NOT NULL,
    actor_type      text        NOT NULL,
    actor_id        text        NOT NULL,
    -- PII (schema class "personal"): stored for the audit team, never logged.
    actor_display_name text,
    entity_type     text        NOT NULL,
    entity_id       text        NOT NULL,
    entity_name     text,
    reason          text,
    before_state    jsonb,
    after_state     jsonb,
    details         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    source_service  text        NOT NULL,
    source_instance text        NOT NULL,
    event_version   text        NOT NULL
);

-- The queries of `pipelinectl audit`: every one is org-scoped and ordered by time.
CREATE INDEX IF NOT EXISTS audit_events_org_time ON audit_events (org_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS audit_events_org_actor_time ON audit_events (org_id, actor_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS audit_events_org_entity_time ON audit_events (org_id, entity_type, entity_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS audit_events_correlation ON audit_events (correlation_id);
-- Retention deletes by age across orgs.
CREATE INDEX IF NOT EXISTS audit_events_occurred_at ON audit_events (occurred_at);
