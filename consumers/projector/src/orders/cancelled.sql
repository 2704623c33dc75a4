-- OrderCancelled, a run of them: placed orders become cancelled, with a timeline row.
WITH cancelled AS (
    UPDATE orders o SET status = 'cancelled', cancelled_at = u.at, updated_at = u.at
    FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[]) AS u(order_id, at, reason)
    WHERE o.order_id = u.order_id AND o.status = 'placed'
    RETURNING o.order_id, o.customer_id, o.currency, u.at, u.reason
), timeline AS (
    INSERT INTO order_timeline (order_id, event_type, occurred_at, reference)
    SELECT order_id, 'OrderCancelled', at, reason FROM cancelled
    ON CONFLICT DO NOTHING
)
SELECT customer_id AS "customer_id!", currency AS "currency!" FROM cancelled
