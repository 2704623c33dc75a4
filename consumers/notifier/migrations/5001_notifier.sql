-- The notifier's tables: webhook subscriptions, the recipients and order
-- owners it learns from the events, and its dedupe record.
CREATE SCHEMA IF NOT EXISTS notifier;

-- Who wants which events, where. `event_types` holds record full names
-- (`shop.orders.OrderPaid`) or `*` for every event.
CREATE TABLE notifier.subscriptions (
    subscription_id  uuid        PRIMARY KEY,
    url              text        NOT NULL,
    event_types      text[]      NOT NULL CHECK (cardinality(event_types) > 0),
    -- The HMAC-SHA256 key deliveries are signed with.
    secret           text        NOT NULL,
    description      text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Customers' addresses, from `shop.customers.CustomerRegistered`.
CREATE TABLE notifier.recipients (
    customer_id  uuid        PRIMARY KEY,
    email        text        NOT NULL,
    name         text        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Whose order is whose, from `shop.orders.OrderPlaced` (later events of an
-- order name only the order).
CREATE TABLE notifier.order_customers (
    order_id     uuid PRIMARY KEY,
    customer_id  uuid NOT NULL
);

-- One row per side effect that succeeded, written only after it did: a
-- delivery that finds its row was already made and is not made again
-- (guarantee 3). `channel` is `webhook` (target: the subscription) or
-- `email` (target: the address); `key` is the idempotency key.
CREATE TABLE notifier.deliveries (
    channel       text        NOT NULL CHECK (channel IN ('webhook', 'email')),
    target        text        NOT NULL,
    key           text        NOT NULL,
    attempt       integer     NOT NULL,
    status        integer,
    delivered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, target, key)
);
CREATE INDEX deliveries_by_time ON notifier.deliveries (delivered_at);
