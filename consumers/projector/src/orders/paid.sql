-- OrderPaid, a run of them: placed orders become paid, with a timeline row and
-- their fulfilment row; returns one row per line of each order that became paid.
WITH paid AS (
    UPDATE orders o SET status = 'paid', paid_at = u.at, updated_at = u.at
    FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::bigint[]) AS u(order_id, at, payment_id, amount)
    WHERE o.order_id = u.order_id AND o.status = 'placed'
    RETURNING o.order_id, o.customer_id, o.currency, u.at, u.payment_id, u.amount
), timeline AS (
    INSERT INTO order_timeline (order_id, event_type, occurred_at, reference, amount_minor, currency)
    SELECT order_id, 'OrderPaid', at, payment_id, amount, currency FROM paid
    ON CONFLICT DO NOTHING
), fulfilment AS (
    INSERT INTO fulfilment (order_id, customer_id, paid_at)
    SELECT order_id, customer_id, at FROM paid
    ON CONFLICT DO NOTHING
)
SELECT p.order_id AS "order_id!", p.customer_id AS "customer_id!", p.currency AS "currency!",
       p.at AS "at!", p.amount AS "amount!", l.sku AS "sku?", l.quantity AS "quantity?",
       l.unit_price_minor AS "unit_price_minor?"
FROM paid p LEFT JOIN order_lines l USING (order_id)
ORDER BY p.order_id, l.line_no
