-- What the shop's tasks produce: invoices, and which unpaid orders were
-- reminded of.
CREATE SCHEMA IF NOT EXISTS shop_tasks;

CREATE SEQUENCE shop_tasks.invoice_numbers;

-- One invoice per paid order, written once: a re-run finds it.
CREATE TABLE shop_tasks.invoices (
    order_id        uuid        PRIMARY KEY,
    invoice_number  text        NOT NULL UNIQUE,
    customer_id     uuid        NOT NULL,
    payment_id      text        NOT NULL,
    currency        char(3)     NOT NULL,
    -- [{"sku", "quantity", "unit_price_minor", "amount_minor"}], in line order.
    lines           jsonb       NOT NULL,
    total_minor     bigint      NOT NULL,
    paid_minor      bigint      NOT NULL,
    paid_at         timestamptz NOT NULL,
    issued_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_by_customer ON shop_tasks.invoices (customer_id, issued_at);

-- Orders whose customer was reminded to pay, and when: one reminder per order.
CREATE TABLE shop_tasks.reminders (
    order_id     uuid        PRIMARY KEY,
    customer_id  uuid        NOT NULL,
    reminded_at  timestamptz NOT NULL DEFAULT now()
);
