-- The read side: read models for analysts, and where each projection has got to.
CREATE SCHEMA IF NOT EXISTS read_model;

-- One row per order: its current state, totals and the time of each step.
CREATE TABLE read_model.orders (
    order_id        uuid        PRIMARY KEY,
    customer_id     uuid        NOT NULL,
    status          text        NOT NULL,
    currency        char(3)     NOT NULL,
    total_minor     bigint      NOT NULL,
    line_count      integer     NOT NULL,
    item_count      integer     NOT NULL,
    refunded_minor  bigint      NOT NULL DEFAULT 0,
    placed_at       timestamptz NOT NULL,
    cancelled_at    timestamptz,
    paid_at         timestamptz,
    shipped_at      timestamptz,
    delivered_at    timestamptz,
    refunded_at     timestamptz,
    updated_at      timestamptz NOT NULL
);

CREATE INDEX orders_by_customer ON read_model.orders (customer_id, placed_at);
CREATE INDEX orders_by_status ON read_model.orders (status, placed_at);
CREATE INDEX orders_by_placed_at ON read_model.orders (placed_at);

-- The next offset each projection will apply, per partition. Written in the
-- same transaction as the read-model changes: the source of truth for where
-- a projection resumes (Kafka's committed offsets only mirror it for lag tools).
CREATE TABLE read_model.projection_offsets (
    projection     text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    last_event_at  timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);
