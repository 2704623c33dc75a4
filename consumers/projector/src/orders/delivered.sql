-- OrderDelivered, a run of them: shipped orders become delivered; fulfilment times.
WITH delivered AS (
    UPDATE orders o SET status = 'delivered', delivered_at = u.at, updated_at = u.at
    FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[]) AS u(order_id, at, shipment_id)
    WHERE o.order_id = u.order_id AND o.status = 'shipped'
    RETURNING o.order_id, u.at, u.shipment_id
), timeline AS (
    INSERT INTO order_timeline (order_id, event_type, occurred_at, reference)
    SELECT order_id, 'OrderDelivered', at, shipment_id FROM delivered
    ON CONFLICT DO NOTHING
)
UPDATE fulfilment f
SET delivered_at = d.at, shipped_to_delivered_seconds = extract(epoch FROM d.at - f.shipped_at)
FROM delivered d WHERE f.order_id = d.order_id
