-- OrderPlaced, a run of them: the orders, their lines and their timeline rows;
-- returns each order newly placed (a repeated event inserts nothing).
WITH placed AS (
    INSERT INTO orders
        (order_id, customer_id, status, currency, total_minor, line_count, item_count, placed_at, updated_at, channel)
    SELECT u.order_id, u.customer_id, 'placed', u.currency, u.total_minor, u.line_count, u.item_count, u.at, u.at,
           u.channel
    FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::int[], $6::int[], $7::timestamptz[],
                $13::text[])
        AS u(order_id, customer_id, currency, total_minor, line_count, item_count, at, channel)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id, customer_id, currency, total_minor, placed_at
), lines AS (
    INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor, currency)
    SELECT l.order_id, l.line_no, l.sku, l.quantity, l.unit_price_minor, p.currency
    FROM UNNEST($8::uuid[], $9::int[], $10::text[], $11::int[], $12::bigint[])
        AS l(order_id, line_no, sku, quantity, unit_price_minor)
    JOIN placed p USING (order_id)
    ON CONFLICT DO NOTHING
), timeline AS (
    INSERT INTO order_timeline (order_id, event_type, occurred_at, amount_minor, currency)
    SELECT order_id, 'OrderPlaced', placed_at, total_minor, currency FROM placed
    ON CONFLICT DO NOTHING
)
SELECT customer_id AS "customer_id!", currency AS "currency!", placed_at AS "placed_at!" FROM placed
