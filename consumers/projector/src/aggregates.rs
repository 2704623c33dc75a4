//! The aggregate read models: `daily_sales`, `product_sales` and
//! `customer_summary`.
//!
//! The per-order statements report what they changed; a batch adds it up
//! here and writes each table once, with one multi-row upsert, at the end of
//! its transaction. Rows are written in key order, so batches of different
//! partitions (or projector instances) that touch the same rows lock them in
//! the same order and never deadlock; and hot rows (today's sales) are
//! locked only for the end of the transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// One line of an order that became paid.
#[derive(Debug, Clone)]
pub struct PaidLine {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub currency: String,
    pub at: DateTime<Utc>,
    /// The amount paid for the whole order.
    pub amount: i64,
    /// The line's SKU, quantity and unit price (`None` for an order without lines).
    pub line: Option<(String, i32, i64)>,
}

/// Additions to one `daily_sales` row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DailyDelta {
    pub orders: i32,
    pub gross_minor: i64,
    pub refunds: i32,
    pub refunded_minor: i64,
}

/// Additions to one `product_sales` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductDelta {
    pub orders: i32,
    pub units: i64,
    pub revenue_minor: i64,
    pub first_sold_at: DateTime<Utc>,
    pub last_sold_at: DateTime<Utc>,
    /// The last order counted, so an order with the SKU on several lines counts once.
    last_order: Option<Uuid>,
}

/// Additions to one `customer_summary` row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CustomerDelta {
    pub orders: i32,
    pub paid_orders: i32,
    pub cancelled_orders: i32,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    pub first_order_at: Option<DateTime<Utc>>,
    pub last_order_at: Option<DateTime<Utc>>,
}

/// What a batch changed in the aggregate read models, by row key.
#[derive(Debug, Default)]
pub struct Deltas {
    daily: BTreeMap<(NaiveDate, String), DailyDelta>,
    products: BTreeMap<(String, String), ProductDelta>,
    customers: BTreeMap<(Uuid, String), CustomerDelta>,
}

impl Deltas {
    /// The delta of a customer's row.
    pub fn customer(&mut self, customer_id: Uuid, currency: String) -> &mut CustomerDelta {
        self.customers.entry((customer_id, currency)).or_default()
    }

    /// An order was placed.
    pub fn placed(&mut self, customer_id: Uuid, currency: String, at: DateTime<Utc>) {
        let c = self.customer(customer_id, currency);
        c.orders += 1;
        c.first_order_at = Some(c.first_order_at.map_or(at, |t| t.min(at)));
        c.last_order_at = Some(c.last_order_at.map_or(at, |t| t.max(at)));
    }

    /// Orders became paid: `lines` holds every line of each of them.
    pub fn paid(&mut self, lines: impl IntoIterator<Item = PaidLine>) {
        let mut last_order = None;
        for line in lines {
            let first_line_of_order = last_order != Some(line.order_id);
            if first_line_of_order {
                last_order = Some(line.order_id);
                let day = self
                    .daily
                    .entry((line.at.date_naive(), line.currency.clone()))
                    .or_default();
                day.orders += 1;
                day.gross_minor += line.amount;
                let c = self.customer(line.customer_id, line.currency.clone());
                c.paid_orders += 1;
                c.paid_minor += line.amount;
            }
            let Some((sku, quantity, unit_price_minor)) = line.line else {
                continue;
            };
            let product = self
                .products
                .entry((sku, line.currency))
                .or_insert(ProductDelta {
                    orders: 0,
                    units: 0,
                    revenue_minor: 0,
                    first_sold_at: line.at,
                    last_sold_at: line.at,
                    last_order: None,
                });
            // An order may hold one SKU on several lines: count the order once.
            if product.last_order != Some(line.order_id) {
                product.last_order = Some(line.order_id);
                product.orders += 1;
            }
            product.units += i64::from(quantity);
            product.revenue_minor += i64::from(quantity) * unit_price_minor;
            product.first_sold_at = product.first_sold_at.min(line.at);
            product.last_sold_at = product.last_sold_at.max(line.at);
        }
    }

    /// An order was refunded.
    pub fn refunded(
        &mut self,
        customer_id: Uuid,
        currency: String,
        at: DateTime<Utc>,
        amount: i64,
    ) {
        let day = self
            .daily
            .entry((at.date_naive(), currency.clone()))
            .or_default();
        day.refunds += 1;
        day.refunded_minor += amount;
        self.customer(customer_id, currency).refunded_minor += amount;
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.daily.is_empty() && self.products.is_empty() && self.customers.is_empty()
    }

    /// Writes every delta: one upsert per table, rows in key order.
    pub async fn flush(self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if !self.customers.is_empty() {
            self.flush_customers(&mut *conn).await?;
        }
        if !self.daily.is_empty() {
            let n = self.daily.len();
            let (mut days, mut currencies, mut orders, mut gross, mut refunds, mut refunded) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for ((day, currency), d) in self.daily {
                days.push(day);
                currencies.push(currency);
                orders.push(d.orders);
                gross.push(d.gross_minor);
                refunds.push(d.refunds);
                refunded.push(d.refunded_minor);
            }
            sqlx::query!(
        "INSERT INTO daily_sales AS d (day, currency, orders, gross_minor, refunds, refunded_minor)
                 SELECT * FROM UNNEST($1::date[], $2::text[], $3::int[], $4::bigint[], $5::int[], $6::bigint[])
                 ON CONFLICT (day, currency) DO UPDATE SET
                     orders = d.orders + excluded.orders,
                     gross_minor = d.gross_minor + excluded.gross_minor,
                     refunds = d.refunds + excluded.refunds,
                     refunded_minor = d.refunded_minor + excluded.refunded_minor",
        &days,
        &currencies,
        &orders,
        &gross,
        &refunds,
        &refunded
    )
            .execute(&mut *conn)
            .await?;
        }
        if !self.products.is_empty() {
            let n = self.products.len();
            let (mut skus, mut currencies, mut orders, mut units, mut revenue, mut first, mut last) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for ((sku, currency), p) in self.products {
                skus.push(sku);
                currencies.push(currency);
                orders.push(p.orders);
                units.push(p.units);
                revenue.push(p.revenue_minor);
                first.push(p.first_sold_at);
                last.push(p.last_sold_at);
            }
            sqlx::query!(
        "INSERT INTO product_sales AS s (sku, currency, orders, units, revenue_minor, first_sold_at, last_sold_at)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::timestamptz[], $7::timestamptz[])
                 ON CONFLICT (sku, currency) DO UPDATE SET
                     orders = s.orders + excluded.orders,
                     units = s.units + excluded.units,
                     revenue_minor = s.revenue_minor + excluded.revenue_minor,
                     first_sold_at = least(s.first_sold_at, excluded.first_sold_at),
                     last_sold_at = greatest(s.last_sold_at, excluded.last_sold_at)",
        &skus,
        &currencies,
        &orders,
        &units,
        &revenue,
        &first,
        &last
    )
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn flush_customers(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let n = self.customers.len();
        let mut ids = Vec::with_capacity(n);
        let mut currencies = Vec::with_capacity(n);
        let (mut orders, mut paid, mut cancelled) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut paid_minor, mut refunded_minor, mut first, mut last) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((customer_id, currency), c) in &self.customers {
            ids.push(*customer_id);
            currencies.push(currency.as_str());
            orders.push(c.orders);
            paid.push(c.paid_orders);
            cancelled.push(c.cancelled_orders);
            paid_minor.push(c.paid_minor);
            refunded_minor.push(c.refunded_minor);
            first.push(c.first_order_at);
            last.push(c.last_order_at);
        }
        // A customer's row is created by their first order; later deltas
        // without one only update it (first/last_order_at stay unless an order was placed).
        sqlx::query!(
        "INSERT INTO customer_summary AS c
                 (customer_id, currency, orders, paid_orders, cancelled_orders, paid_minor, refunded_minor,
                  first_order_at, last_order_at)
             SELECT u.customer_id, u.currency, u.orders, u.paid_orders, u.cancelled_orders, u.paid_minor,
                    u.refunded_minor, COALESCE(u.first_at, now()), COALESCE(u.last_at, now())
             FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::int[], $5::int[], $6::bigint[], $7::bigint[],
                         $8::timestamptz[], $9::timestamptz[])
                 AS u(customer_id, currency, orders, paid_orders, cancelled_orders, paid_minor, refunded_minor,
                      first_at, last_at)
             ON CONFLICT (customer_id, currency) DO UPDATE SET
                 orders = c.orders + excluded.orders,
                 paid_orders = c.paid_orders + excluded.paid_orders,
                 cancelled_orders = c.cancelled_orders + excluded.cancelled_orders,
                 paid_minor = c.paid_minor + excluded.paid_minor,
                 refunded_minor = c.refunded_minor + excluded.refunded_minor,
                 first_order_at = CASE WHEN excluded.orders > 0
                     THEN least(c.first_order_at, excluded.first_order_at) ELSE c.first_order_at END,
                 last_order_at = CASE WHEN excluded.orders > 0
                     THEN greatest(c.last_order_at, excluded.last_order_at) ELSE c.last_order_at END",
        &ids,
        &currencies as &[&str],
        &orders,
        &paid,
        &cancelled,
        &paid_minor,
        &refunded_minor,
        &first as &[Option<DateTime<Utc>>],
        &last as &[Option<DateTime<Utc>>]
    )
        .execute(conn)
        .await?;
        Ok(())
    }
}
