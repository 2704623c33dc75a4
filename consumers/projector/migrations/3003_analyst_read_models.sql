-- The analysts' read models beside read_model.orders. All are maintained by
-- the `orders` projection, in the same transaction as read_model.orders, so
-- they always agree with each other. Amounts are integer minor units of the
-- row's currency; times are UTC.

-- The lines of every order, as placed.
CREATE TABLE read_model.order_lines (
    order_id          uuid    NOT NULL,
    line_no           integer NOT NULL,
    sku               text    NOT NULL,
    quantity          integer NOT NULL,
    unit_price_minor  bigint  NOT NULL,
    currency          char(3) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_lines_by_sku ON read_model.order_lines (sku);

-- Every event that changed an order, one row per (order, event type): the
-- state machine lets each kind happen at most once per order.
CREATE TABLE read_model.order_timeline (
    order_id      uuid        NOT NULL,
    event_type    text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    reference     text,
    amount_minor  bigint,
    currency      char(3),
    PRIMARY KEY (order_id, event_type)
);
CREATE INDEX order_timeline_by_time ON read_model.order_timeline (occurred_at);

-- Sales per UTC day and currency: payments captured and refunds issued that day.
CREATE TABLE read_model.daily_sales (
    day             date    NOT NULL,
    currency        char(3) NOT NULL,
    orders          integer NOT NULL DEFAULT 0,
    gross_minor     bigint  NOT NULL DEFAULT 0,
    refunds         integer NOT NULL DEFAULT 0,
    refunded_minor  bigint  NOT NULL DEFAULT 0,
    net_minor       bigint  GENERATED ALWAYS AS (gross_minor - refunded_minor) STORED,
    PRIMARY KEY (day, currency)
);

-- Paid sales per SKU and currency.
CREATE TABLE read_model.product_sales (
    sku            text        NOT NULL,
    currency       char(3)     NOT NULL,
    orders         integer     NOT NULL DEFAULT 0,
    units          bigint      NOT NULL DEFAULT 0,
    revenue_minor  bigint      NOT NULL DEFAULT 0,
    first_sold_at  timestamptz NOT NULL,
    last_sold_at   timestamptz NOT NULL,
    PRIMARY KEY (sku, currency)
);

-- Per customer and currency: how many orders, how much they are worth.
CREATE TABLE read_model.customer_summary (
    customer_id           uuid        NOT NULL,
    currency              char(3)     NOT NULL,
    orders                integer     NOT NULL DEFAULT 0,
    paid_orders           integer     NOT NULL DEFAULT 0,
    cancelled_orders      integer     NOT NULL DEFAULT 0,
    paid_minor            bigint      NOT NULL DEFAULT 0,
    refunded_minor        bigint      NOT NULL DEFAULT 0,
    lifetime_value_minor  bigint      GENERATED ALWAYS AS (paid_minor - refunded_minor) STORED,
    first_order_at        timestamptz NOT NULL,
    last_order_at         timestamptz NOT NULL,
    PRIMARY KEY (customer_id, currency)
);
CREATE INDEX customer_summary_by_last_order ON read_model.customer_summary (last_order_at);

-- Every paid order's way to the customer, with the time each leg took.
CREATE TABLE read_model.fulfilment (
    order_id                      uuid        PRIMARY KEY,
    customer_id                   uuid        NOT NULL,
    paid_at                       timestamptz NOT NULL,
    shipped_at                    timestamptz,
    delivered_at                  timestamptz,
    shipment_id                   text,
    carrier                       text,
    paid_to_shipped_seconds       double precision,
    shipped_to_delivered_seconds  double precision
);
CREATE INDEX fulfilment_by_paid_at ON read_model.fulfilment (paid_at);
