-- Inputs gold dead-lettered whose offsets later inputs of their batch claimed past (a row
-- PostgreSQL refused), with why: a replay of one (a crash after the batch's commit, before
-- its dead letter was written) fails it again instead of passing as already applied. Only
-- refused inputs land here, so the table stays small.
CREATE TABLE IF NOT EXISTS gold_failed (
    topic        text        NOT NULL,
    partition    int         NOT NULL,
    input_offset bigint      NOT NULL,
    code         text        NOT NULL,
    message      text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, input_offset)
);
