-- OrderRefunded, a run of them: paid, shipped or delivered orders become refunded.
WITH refunded AS (
    UPDATE orders o
    SET status = 'refunded', refunded_minor = o.refunded_minor + u.amount, refunded_at = u.at, updated_at = u.at
    FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::bigint[]) AS u(order_id, at, refund_id, amount)
    WHERE o.order_id = u.order_id AND o.status IN ('paid', 'shipped', 'delivered')
    RETURNING o.order_id, o.customer_id, o.currency, u.at, u.refund_id, u.amount
), timeline AS (
    INSERT INTO order_timeline (order_id, event_type, occurred_at, reference, amount_minor, currency)
    SELECT order_id, 'OrderRefunded', at, refund_id, amount, currency FROM refunded
    ON CONFLICT DO NOTHING
)
SELECT customer_id AS "customer_id!", currency AS "currency!", at AS "at!", amount AS "amount!" FROM refunded
