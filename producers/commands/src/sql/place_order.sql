-- PlaceOrder: the order, its lines and its OrderPlaced event in one statement.
WITH new_order AS (
    INSERT INTO commands.orders
        (order_id, customer_id, status, currency, total_minor, version, placed_at, updated_at)
    VALUES ($1, $2, 'placed', $3, $4, 1, $5, $5)
), new_lines AS (
    INSERT INTO commands.order_lines (order_id, line_no, sku, quantity, unit_price_minor)
    SELECT $1, * FROM UNNEST($6::int[], $7::text[], $8::int[], $9::bigint[])
)
SELECT commands.outbox_append($10, $11, $12, $13, $14)
