//! The per-order read models: `orders`, `order_lines`, `order_timeline` and
//! `fulfilment`, maintained with one multi-row statement per run of events of
//! one kind.
//!
//! Every statement is idempotent and follows the order state machine: a
//! status changes only from the states allowed before it, and the other
//! tables change only for orders whose status did. So a duplicate published
//! by the relay after a crash changes nothing. Each statement returns what
//! changed, which becomes the [`Deltas`] of the aggregate read models.
//!
//! Table names are unqualified: the batch's `search_path` picks the schema
//! (`read_model`, or a rebuild's own).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tributary_consumer::BadInput;
use tributary_schemas::orders::OrderEvent;
use uuid::Uuid;

use crate::aggregates::Deltas;

/// Applies events, adding what changed to `deltas`.
///
/// Only each order's own events must keep their order: the other orders'
/// commute (the aggregates are sums, minima and maxima). So the batch is cut
/// into stages — every order's first event in the batch, then every order's
/// second, and so on — and within a stage, events of one kind become one
/// statement. Traffic interleaves kinds finely; grouping by kind this way
/// keeps the statements per batch to a few per stage instead of one per
/// event.
pub async fn apply(
    conn: &mut PgConnection,
    events: &[OrderEvent],
    deltas: &mut Deltas,
) -> anyhow::Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    let mut staged: Vec<(usize, usize, &OrderEvent)> = events
        .iter()
        .map(|event| {
            let stage = seen.entry(event.order_id()).or_default();
            *stage += 1;
            (*stage, kind(event), event)
        })
        .collect();
    // Stable: within a stage and kind, events keep their offset order.
    staged.sort_by_key(|(stage, kind, _)| (*stage, *kind));
    let staged: Vec<&OrderEvent> = staged.into_iter().map(|(_, _, e)| e).collect();
    for run in staged.chunk_by(|a, b| kind(a) == kind(b)) {
        apply_run(conn, run, deltas).await?;
    }
    Ok(())
}

/// The kind of an event, as a sort key.
fn kind(event: &OrderEvent) -> usize {
    match event {
        OrderEvent::Placed(_) => 0,
        OrderEvent::Cancelled(_) => 1,
        OrderEvent::Paid(_) => 2,
        OrderEvent::Shipped(_) => 3,
        OrderEvent::Delivered(_) => 4,
        OrderEvent::Refunded(_) => 5,
    }
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn uuid(text: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| BadInput(format!("{text:?} is not a UUID")).into())
}

const PLACED: &str = "
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
SELECT customer_id, currency, placed_at FROM placed";

const CANCELLED: &str = "
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
SELECT customer_id, currency FROM cancelled";

/// Returns one row per line of each order that became paid.
const PAID: &str = "
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
SELECT p.order_id, p.customer_id, p.currency, p.at, p.amount, l.sku, l.quantity, l.unit_price_minor
FROM paid p LEFT JOIN order_lines l USING (order_id)
ORDER BY p.order_id, l.line_no";

const SHIPPED: &str = "
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
FROM shipped s WHERE f.order_id = s.order_id";

const DELIVERED: &str = "
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
FROM delivered d WHERE f.order_id = d.order_id";

const REFUNDED: &str = "
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
SELECT customer_id, currency, at, amount FROM refunded";

/// Columns of one run, one vector per statement parameter.
#[derive(Default)]
struct Columns {
    ids: Vec<Uuid>,
    at: Vec<DateTime<Utc>>,
    text: Vec<String>,
    more_text: Vec<String>,
    amounts: Vec<i64>,
}

impl Columns {
    fn push(&mut self, order_id: &str, at: i64) -> anyhow::Result<()> {
        self.ids.push(uuid(order_id)?);
        self.at.push(millis(at));
        Ok(())
    }
}

async fn apply_run(
    conn: &mut PgConnection,
    run: &[&OrderEvent],
    deltas: &mut Deltas,
) -> anyhow::Result<()> {
    if let OrderEvent::Placed(_) = run[0] {
        return apply_placed(conn, run, deltas).await;
    }
    let mut c = Columns::default();
    for event in run {
        match event {
            OrderEvent::Placed(_) => unreachable!("a run holds one kind"),
            OrderEvent::Cancelled(e) => {
                c.push(&e.order_id, e.cancelled_at)?;
                c.text.push(e.reason.clone());
            }
            OrderEvent::Paid(e) => {
                c.push(&e.order_id, e.paid_at)?;
                c.text.push(e.payment_id.clone());
                c.amounts.push(e.amount_minor);
            }
            OrderEvent::Shipped(e) => {
                c.push(&e.order_id, e.shipped_at)?;
                c.text.push(e.shipment_id.clone());
                c.more_text.push(e.carrier.clone());
            }
            OrderEvent::Delivered(e) => {
                c.push(&e.order_id, e.delivered_at)?;
                c.text.push(e.shipment_id.clone());
            }
            OrderEvent::Refunded(e) => {
                c.push(&e.order_id, e.refunded_at)?;
                c.text.push(e.refund_id.clone());
                c.amounts.push(e.amount_minor);
            }
        }
    }
    match run[0] {
        OrderEvent::Placed(_) => unreachable!("handled above"),
        OrderEvent::Cancelled(_) => {
            let rows: Vec<(Uuid, String)> = sqlx::query_as(CANCELLED)
                .bind(&c.ids)
                .bind(&c.at)
                .bind(&c.text)
                .fetch_all(conn)
                .await?;
            for (customer_id, currency) in rows {
                deltas.customer(customer_id, currency).cancelled_orders += 1;
            }
        }
        OrderEvent::Paid(_) => {
            type PaidLine = (
                Uuid,
                Uuid,
                String,
                DateTime<Utc>,
                i64,
                Option<String>,
                Option<i32>,
                Option<i64>,
            );
            let rows: Vec<PaidLine> = sqlx::query_as(PAID)
                .bind(&c.ids)
                .bind(&c.at)
                .bind(&c.text)
                .bind(&c.amounts)
                .fetch_all(conn)
                .await?;
            deltas.paid(rows.into_iter().map(
                |(order_id, customer_id, currency, at, amount, sku, quantity, price)| {
                    crate::aggregates::PaidLine {
                        order_id,
                        customer_id,
                        currency,
                        at,
                        amount,
                        line: sku.zip(quantity).zip(price).map(|((s, q), p)| (s, q, p)),
                    }
                },
            ));
        }
        OrderEvent::Shipped(_) => {
            sqlx::query(SHIPPED)
                .bind(&c.ids)
                .bind(&c.at)
                .bind(&c.text)
                .bind(&c.more_text)
                .execute(conn)
                .await?;
        }
        OrderEvent::Delivered(_) => {
            sqlx::query(DELIVERED)
                .bind(&c.ids)
                .bind(&c.at)
                .bind(&c.text)
                .execute(conn)
                .await?;
        }
        OrderEvent::Refunded(_) => {
            let rows: Vec<(Uuid, String, DateTime<Utc>, i64)> = sqlx::query_as(REFUNDED)
                .bind(&c.ids)
                .bind(&c.at)
                .bind(&c.text)
                .bind(&c.amounts)
                .fetch_all(conn)
                .await?;
            for (customer_id, currency, at, amount) in rows {
                deltas.refunded(customer_id, currency, at, amount);
            }
        }
    }
    Ok(())
}

async fn apply_placed(
    conn: &mut PgConnection,
    run: &[&OrderEvent],
    deltas: &mut Deltas,
) -> anyhow::Result<()> {
    let n = run.len();
    let (mut ids, mut customers, mut currencies, mut totals) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut line_counts, mut item_counts, mut at, mut channels) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut line_orders, mut line_nos, mut skus, mut quantities, mut prices) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for event in run {
        let OrderEvent::Placed(e) = event else {
            unreachable!("a run holds one kind")
        };
        let order_id = uuid(&e.order_id)?;
        ids.push(order_id);
        customers.push(uuid(&e.customer_id)?);
        currencies.push(e.currency.as_str());
        totals.push(e.total_minor);
        line_counts.push(e.lines.len() as i32);
        let items: i64 = e.lines.iter().map(|l| i64::from(l.quantity)).sum();
        item_counts.push(i32::try_from(items).map_err(|_| {
            BadInput(format!(
                "order {}: {items} items overflow the item count",
                e.order_id
            ))
        })?);
        at.push(millis(e.placed_at));
        channels.push(e.channel.as_deref());
        for (n, line) in (1..).zip(&e.lines) {
            line_orders.push(order_id);
            line_nos.push(n);
            skus.push(line.sku.as_str());
            quantities.push(line.quantity);
            prices.push(line.unit_price_minor);
        }
    }
    let placed: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(PLACED)
        .bind(&ids)
        .bind(&customers)
        .bind(&currencies)
        .bind(&totals)
        .bind(&line_counts)
        .bind(&item_counts)
        .bind(&at)
        .bind(&line_orders)
        .bind(&line_nos)
        .bind(&skus)
        .bind(&quantities)
        .bind(&prices)
        .bind(&channels)
        .fetch_all(conn)
        .await?;
    for (customer_id, currency, placed_at) in placed {
        deltas.placed(customer_id, currency, placed_at);
    }
    Ok(())
}
