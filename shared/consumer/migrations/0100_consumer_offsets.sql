-- Where each consumer has got to, per topic and partition. Written in the
-- same transaction as the consumer's work: the source of truth for where it
-- resumes (Kafka's committed offsets only mirror it for lag tools).
CREATE SCHEMA IF NOT EXISTS consumer;

CREATE TABLE consumer.offsets (
    consumer       text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    last_event_at  timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
