//! The `read_model.orders` read model: one row per order, maintained with
//! multi-row statements over runs of events of one kind.
//!
//! Every statement is idempotent, so a duplicate published by the relay
//! after a crash changes nothing: `OrderPlaced` inserts only new orders, and a
//! status change applies only from the states the order state machine allows.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tributary_schemas::orders::OrderEvent;
use uuid::Uuid;

/// Applies events in order. Consecutive events of one kind become one statement.
pub async fn apply(conn: &mut PgConnection, events: &[OrderEvent]) -> anyhow::Result<()> {
    let mut start = 0;
    while start < events.len() {
        let kind = std::mem::discriminant(&events[start]);
        let end = events[start..]
            .iter()
            .position(|e| std::mem::discriminant(e) != kind)
            .map_or(events.len(), |n| start + n);
        apply_run(conn, &events[start..end]).await?;
        start = end;
    }
    Ok(())
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn uuid(text: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| anyhow::anyhow!("{text:?} is not a UUID"))
}

// Status changes, each applied only from the status the state machine allows before it.
const PAID: &str =
    "UPDATE read_model.orders o SET status = 'paid', paid_at = u.at, updated_at = u.at
    FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(order_id, at)
    WHERE o.order_id = u.order_id AND o.status = 'placed'";
const SHIPPED: &str =
    "UPDATE read_model.orders o SET status = 'shipped', shipped_at = u.at, updated_at = u.at
    FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(order_id, at)
    WHERE o.order_id = u.order_id AND o.status = 'paid'";
const DELIVERED: &str =
    "UPDATE read_model.orders o SET status = 'delivered', delivered_at = u.at, updated_at = u.at
    FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(order_id, at)
    WHERE o.order_id = u.order_id AND o.status = 'shipped'";
const CANCELLED: &str =
    "UPDATE read_model.orders o SET status = 'cancelled', cancelled_at = u.at, updated_at = u.at
    FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(order_id, at)
    WHERE o.order_id = u.order_id AND o.status = 'placed'";

async fn apply_run(conn: &mut PgConnection, run: &[OrderEvent]) -> anyhow::Result<()> {
    match &run[0] {
        OrderEvent::Placed(_) => {
            let n = run.len();
            let (mut ids, mut customers, mut currencies, mut totals) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut lines, mut items, mut at) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for event in run {
                let OrderEvent::Placed(e) = event else {
                    unreachable!("a run holds one kind")
                };
                ids.push(uuid(&e.order_id)?);
                customers.push(uuid(&e.customer_id)?);
                currencies.push(e.currency.as_str());
                totals.push(e.total_minor);
                lines.push(e.lines.len() as i32);
                items.push(e.lines.iter().map(|l| l.quantity).sum::<i32>());
                at.push(millis(e.placed_at));
            }
            sqlx::query(
                "INSERT INTO read_model.orders
                     (order_id, customer_id, status, currency, total_minor, line_count, item_count, placed_at, updated_at)
                 SELECT u.order_id, u.customer_id, 'placed', u.currency, u.total_minor, u.line_count, u.item_count, u.at, u.at
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::int[], $6::int[], $7::timestamptz[])
                     AS u(order_id, customer_id, currency, total_minor, line_count, item_count, at)
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&customers)
            .bind(&currencies)
            .bind(&totals)
            .bind(&lines)
            .bind(&items)
            .bind(&at)
            .execute(conn)
            .await?;
        }
        OrderEvent::Refunded(_) => {
            let mut ids = Vec::with_capacity(run.len());
            let mut amounts = Vec::with_capacity(run.len());
            let mut at = Vec::with_capacity(run.len());
            for event in run {
                let OrderEvent::Refunded(e) = event else {
                    unreachable!("a run holds one kind")
                };
                ids.push(uuid(&e.order_id)?);
                amounts.push(e.amount_minor);
                at.push(millis(e.refunded_at));
            }
            sqlx::query(
                "UPDATE read_model.orders o
                 SET status = 'refunded', refunded_minor = o.refunded_minor + u.amount, refunded_at = u.at, updated_at = u.at
                 FROM UNNEST($1::uuid[], $2::bigint[], $3::timestamptz[]) AS u(order_id, amount, at)
                 WHERE o.order_id = u.order_id AND o.status IN ('paid', 'shipped', 'delivered')",
            )
            .bind(&ids)
            .bind(&amounts)
            .bind(&at)
            .execute(conn)
            .await?;
        }
        first => {
            let statement = match first {
                OrderEvent::Cancelled(_) => CANCELLED,
                OrderEvent::Paid(_) => PAID,
                OrderEvent::Shipped(_) => SHIPPED,
                OrderEvent::Delivered(_) => DELIVERED,
                OrderEvent::Placed(_) | OrderEvent::Refunded(_) => unreachable!("handled above"),
            };
            let mut ids = Vec::with_capacity(run.len());
            let mut at = Vec::with_capacity(run.len());
            for event in run {
                ids.push(uuid(event.order_id())?);
                at.push(millis(match event {
                    OrderEvent::Cancelled(e) => e.cancelled_at,
                    OrderEvent::Paid(e) => e.paid_at,
                    OrderEvent::Shipped(e) => e.shipped_at,
                    OrderEvent::Delivered(e) => e.delivered_at,
                    OrderEvent::Placed(_) | OrderEvent::Refunded(_) => {
                        unreachable!("a run holds one kind")
                    }
                }));
            }
            sqlx::query(statement)
                .bind(&ids)
                .bind(&at)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}
