-- Customers, and the idempotency keys that let a client retry a command safely.
CREATE TABLE commands.customers (
    customer_id    uuid        PRIMARY KEY,
    -- Lower-cased; one customer per address.
    email          text        NOT NULL UNIQUE,
    name           text        NOT NULL,
    registered_at  timestamptz NOT NULL
);

-- The first successful response to a command sent with an Idempotency-Key.
-- The row is inserted when the command starts and completed in the same
-- transaction, so a concurrent retry waits for it and then replays it.
CREATE TABLE commands.idempotency_keys (
    key           text        PRIMARY KEY,
    -- sha256 of the method, the path and the canonical request body.
    request_hash  bytea       NOT NULL,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
