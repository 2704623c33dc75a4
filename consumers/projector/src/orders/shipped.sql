-- OrderShipped, a run of them: paid orders become shipped; fulfilment times.
WITH shipped AS (
    UPDATE orders o SET status = 'shipped', shipped_at = u.at, updated_at = u.at
    FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[]) AS u(order_id, at, shipment_id, carrier)
    WHERE o.order_id = u.order_id AND o.status = 'paid'
    RETURNING o.order_id, u.at, u.shipment_id, u.carrier
), timeline AS (
    INSERT INTO order_timeline (order_id, event_type, occurred_at, reference)
    SELECT order_id, 'OrderShipped', at, shipment_id FROM shipped
    ON CONFLICT DO NOTHING
)
UPDATE fulfilment f
SET shipped_at = s.at, shipment_id = s.shipment_id, carrier = s.carrier,
    paid_to_shipped_seconds = extract(epoch FROM s.at - f.paid_at)
FROM shipped s WHERE f.order_id = s.order_id
