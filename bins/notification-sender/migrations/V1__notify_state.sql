-- adpipe notification-sender state: the channels each org configured (from config.changes),
-- one row per alert and channel delivered or tried, and the in-app notifications.

-- Channels per org, versioned by config.changes; a delete is a tombstone (deleted = true)
-- so an older upsert arriving late cannot bring the channel back.
CREATE TABLE IF NOT EXISTS notify_channels (
    org_id                bigint      NOT NULL,
    channel_id            text        NOT NULL,
    version               bigint      NOT NULL,
    deleted               boolean     NOT NULL,
    kind                  text        NOT NULL,
    -- URL, e-mail address or in-app audience: PII class 'contact', never logged.
    target                text        NOT NULL,
    -- The name of a secret in the secrets directory, never the secret.
    secret_ref            text,
    rate_limit_per_minute int,
    enabled               boolean     NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, channel_id)
);

-- One row per idempotency key (alert id, state, fired_at and channel id): status 'sent'
-- once the peer accepted the notification, 'failed' while attempts failed.
CREATE TABLE IF NOT EXISTS notify_deliveries (
    idempotency_key uuid        PRIMARY KEY,
    org_id          bigint      NOT NULL,
    alert_id        uuid        NOT NULL,
    channel_id      text        NOT NULL,
    kind            text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('sent', 'failed')),
    attempts        int         NOT NULL,
    last_error      text,
    first_attempt_at timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX IF NOT EXISTS notify_deliveries_alert ON notify_deliveries (org_id, alert_id);

-- In-app notifications, read by the product's UI per org and audience.
CREATE TABLE IF NOT EXISTS notify_in_app (
    idempotency_key uuid        PRIMARY KEY,
    org_id          bigint      NOT NULL,
    audience        text        NOT NULL,
    channel_id      text        NOT NULL,
    alert_id        uuid        NOT NULL,
    state           text        NOT NULL,
    severity        text        NOT NULL,
    title           text        NOT NULL,
    message         text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz
);
CREATE INDEX IF NOT EXISTS notify_in_app_unread
    ON notify_in_app (org_id, audience, created_at DESC) WHERE read_at IS NULL;
