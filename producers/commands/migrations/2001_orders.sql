-- The command side: the order aggregate's write model and the transactional outbox.
CREATE SCHEMA IF NOT EXISTS commands;

CREATE TABLE commands.orders (
    order_id     uuid        PRIMARY KEY,
    customer_id  uuid        NOT NULL,
    status       text        NOT NULL,
    currency     char(3)     NOT NULL,
    total_minor  bigint      NOT NULL CHECK (total_minor >= 0),
    -- Number of events in the order's stream; the expected version of the next command.
    version      integer     NOT NULL,
    placed_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE commands.order_lines (
    order_id          uuid    NOT NULL REFERENCES commands.orders (order_id),
    line_no           integer NOT NULL,
    sku               text    NOT NULL,
    quantity          integer NOT NULL CHECK (quantity > 0),
    unit_price_minor  bigint  NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- Each row is exactly the Kafka record the relay will publish.
CREATE TABLE commands.outbox (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE,
    topic         text        NOT NULL,
    key           text        NOT NULL,
    value         bytea       NOT NULL,
    headers       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);

CREATE INDEX outbox_unpublished ON commands.outbox (id) WHERE published_at IS NULL;
