-- The product catalog: the SKUs the shop sells. An order line must name one
-- (a foreign key, checked in PlaceOrder's own statement). Products are
-- upserted by the admin API (PUT /products/{sku}); rows are never deleted
-- while orders refer to them.
CREATE TABLE commands.products (
    sku         text        PRIMARY KEY,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Orders placed before the catalog existed keep their SKUs.
INSERT INTO commands.products (sku, name)
SELECT DISTINCT sku, sku FROM commands.order_lines
ON CONFLICT DO NOTHING;

ALTER TABLE commands.order_lines
    ADD CONSTRAINT order_lines_sku_in_catalog FOREIGN KEY (sku) REFERENCES commands.products (sku);
