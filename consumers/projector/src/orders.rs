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
//! (`read_model`, or a rebuild's own, whose tables are created `LIKE` the
//! live ones). The statements are in `orders/*.sql`, checked at compile
//! time: the database `.ci/sqlx` prepares against has `read_model` on its
//! search_path, so the macros resolve the names to the live tables, whose
//! columns every rebuild's copy has too.

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
            let rows = sqlx::query_file!("src/orders/cancelled.sql", &c.ids, &c.at, &c.text)
                .fetch_all(conn)
                .await?;
            for row in rows {
                deltas
                    .customer(row.customer_id, row.currency)
                    .cancelled_orders += 1;
            }
        }
        OrderEvent::Paid(_) => {
            let rows = sqlx::query_file!("src/orders/paid.sql", &c.ids, &c.at, &c.text, &c.amounts)
                .fetch_all(conn)
                .await?;
            deltas.paid(rows.into_iter().map(|row| {
                crate::aggregates::PaidLine {
                    order_id: row.order_id,
                    customer_id: row.customer_id,
                    currency: row.currency,
                    at: row.at,
                    amount: row.amount,
                    line: row
                        .sku
                        .zip(row.quantity)
                        .zip(row.unit_price_minor)
                        .map(|((s, q), p)| (s, q, p)),
                }
            }));
        }
        OrderEvent::Shipped(_) => {
            sqlx::query_file!(
                "src/orders/shipped.sql",
                &c.ids,
                &c.at,
                &c.text,
                &c.more_text
            )
            .execute(conn)
            .await?;
        }
        OrderEvent::Delivered(_) => {
            sqlx::query_file!("src/orders/delivered.sql", &c.ids, &c.at, &c.text)
                .execute(conn)
                .await?;
        }
        OrderEvent::Refunded(_) => {
            let rows = sqlx::query_file!(
                "src/orders/refunded.sql",
                &c.ids,
                &c.at,
                &c.text,
                &c.amounts
            )
            .fetch_all(conn)
            .await?;
            for row in rows {
                deltas.refunded(row.customer_id, row.currency, row.at, row.amount);
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
    let placed = sqlx::query_file!(
        "src/orders/placed.sql",
        &ids,
        &customers,
        &currencies as &[&str],
        &totals,
        &line_counts,
        &item_counts,
        &at,
        &line_orders,
        &line_nos,
        &skus as &[&str],
        &quantities,
        &prices,
        &channels as &[Option<&str>],
    )
    .fetch_all(conn)
    .await?;
    for row in placed {
        deltas.placed(row.customer_id, row.currency, row.placed_at);
    }
    Ok(())
}
