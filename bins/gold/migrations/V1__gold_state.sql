-- adpipe gold state. Everything gold knows lives here, written in the same statement as the
-- input offset it reflects, so a replayed record is recognised and never counted twice.

-- The next input offset to apply, per input partition. A record below it was applied already.
CREATE TABLE IF NOT EXISTS gold_offsets (
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- One row per silver dedupe key: a corrected row replaces its earlier contribution.
CREATE TABLE IF NOT EXISTS gold_rows (
    org_id        bigint        NOT NULL,
    dsp_type      text          NOT NULL,
    entity_id     text          NOT NULL,
    day           date          NOT NULL,
    campaign_id   text          NOT NULL,
    -- The entity id of line-item rows (DV360); '' for other entities.
    line_item_id  text          NOT NULL,
    impressions   bigint        NOT NULL,
    clicks        bigint        NOT NULL,
    conversions   bigint        NOT NULL,
    spend         numeric(20,2) NOT NULL,
    quality_score int           NOT NULL,
    src_partition int           NOT NULL,
    src_offset    bigint        NOT NULL,
    updated_at    timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, dsp_type, entity_id, day)
);

-- Per campaign, line item ('' = rows of other entities) and day: the sums of gold_rows,
-- kept in step with it (each row change adds its difference in the same statement), so an
-- aggregate reads at most one row per day and line item however many entities deliver.
CREATE TABLE IF NOT EXISTS gold_days (
    org_id        bigint        NOT NULL,
    campaign_id   text          NOT NULL,
    line_item_id  text          NOT NULL,
    day           date          NOT NULL,
    impressions   bigint        NOT NULL,
    clicks        bigint        NOT NULL,
    conversions   bigint        NOT NULL,
    spend         numeric(20,2) NOT NULL,
    rows          bigint        NOT NULL,
    quality_sum   bigint        NOT NULL,
    PRIMARY KEY (org_id, campaign_id, day, line_item_id)
);

-- Bookings from config.changes (source 'config', versioned per change) and from CRM booking
-- rows (source 'report', versioned by input offset). A config booking wins over a report one.
CREATE TABLE IF NOT EXISTS gold_bookings (
    org_id             bigint        NOT NULL,
    campaign_id        text          NOT NULL,
    -- '' = the whole campaign.
    line_item_id       text          NOT NULL,
    source             text          NOT NULL CHECK (source IN ('config', 'report')),
    version            bigint        NOT NULL,
    deleted            boolean       NOT NULL DEFAULT false,
    booked_impressions bigint        NOT NULL,
    booked_budget      numeric(20,2) NOT NULL,
    booking_revenue    numeric(20,2) NOT NULL,
    flight_start       date          NOT NULL,
    flight_end         date          NOT NULL,
    currency           text,
    updated_at         timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, campaign_id, line_item_id, source)
);
CREATE INDEX IF NOT EXISTS gold_bookings_flight ON gold_bookings (flight_end, flight_start);
