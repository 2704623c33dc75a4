-- Dead letters sent back to their original topic by `tributary ctl dlq
-- redrive`: one row per dead letter, written once the broker acknowledged
-- the copy, so no dead letter is redriven twice.
CREATE TABLE consumer.redrives (
    dlq_topic         text        NOT NULL,
    dlq_partition     integer     NOT NULL,
    dlq_offset        bigint      NOT NULL,
    redriven_at       timestamptz NOT NULL DEFAULT now(),
    target_topic      text        NOT NULL,
    -- Where the copy landed, and the redrive_count it carried: a handler that
    -- dead-letters through the outbox (the process manager) does not keep
    -- the copy's headers, so the loop guard finds its count here.
    target_partition  integer     NOT NULL,
    target_offset     bigint      NOT NULL,
    redrive_count     integer     NOT NULL,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);

CREATE INDEX redrives_target ON consumer.redrives (target_topic, target_partition, target_offset);
