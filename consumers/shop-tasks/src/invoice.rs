//! Invoices: one per paid order, numbered, stored once.

use anyhow::{Context, anyhow};
use apache_avro::AvroSchema;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tributary_notifier::{EventKind, Reaction, ShopEvent};
use tributary_schemas::orders::OrderEvent;
use tributary_tasks::{Enqueue, Task, TaskContext, TaskError};
use uuid::Uuid;

/// What an invoice is issued from: the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.tasks")]
pub struct InvoiceArgs {
    pub order_id: String,
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: String,
    /// Epoch milliseconds.
    pub paid_at: i64,
}

/// Enqueues `shop.invoice` for every `OrderPaid`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InvoiceOnPaid;

impl Reaction for InvoiceOnPaid {
    fn react(&self, event: &ShopEvent) -> anyhow::Result<Vec<Enqueue>> {
        let EventKind::Order(OrderEvent::Paid(paid)) = &event.kind else {
            return Ok(Vec::new());
        };
        let args = InvoiceArgs {
            order_id: paid.order_id.clone(),
            payment_id: paid.payment_id.clone(),
            amount_minor: paid.amount_minor,
            currency: paid.currency.clone(),
            paid_at: paid.paid_at,
        };
        Ok(vec![Enqueue::new::<IssueInvoice>(&args)?])
    }
}

/// Generates and stores the invoice of a paid order.
#[derive(Debug, Clone)]
pub struct IssueInvoice {
    pool: PgPool,
}

impl IssueInvoice {
    /// Invoices stored in `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Task for IssueInvoice {
    const NAME: &'static str = "shop.invoice";
    type Args = InvoiceArgs;

    async fn run(&self, _: TaskContext, args: InvoiceArgs) -> Result<serde_json::Value, TaskError> {
        let order_id = Uuid::parse_str(&args.order_id)
            .map_err(|e| TaskError::Permanent(anyhow!("order_id: {e}")))?;
        let paid_at = DateTime::<Utc>::from_timestamp_millis(args.paid_at)
            .ok_or_else(|| TaskError::Permanent(anyhow!("paid_at is out of range")))?;
        if let Some(number) = invoice_number(&self.pool, order_id).await? {
            return Ok(json!({"invoice_number": number, "already_issued": true}));
        }
        let order: Option<(Uuid, String, i64)> = sqlx::query!(
            "SELECT customer_id, currency, total_minor FROM read_model.orders WHERE order_id = $1",
            order_id
        )
        .fetch_optional(&self.pool)
        .await
        .context("reading the order")?
        .map(|r| (r.customer_id, r.currency, r.total_minor));
        // The payment and the order's placement are read by two consumers:
        // the projector may not have caught up yet.
        let (customer_id, currency, total_minor) = order.ok_or_else(|| {
            TaskError::Retry(anyhow!("order {order_id} is not in the read model yet"))
        })?;
        let lines: Vec<(String, i32, i64)> = sqlx::query!(
            "SELECT sku, quantity, unit_price_minor FROM read_model.order_lines
             WHERE order_id = $1 ORDER BY line_no",
            order_id
        )
        .fetch_all(&self.pool)
        .await
        .context("reading the order's lines")?
        .into_iter()
        .map(|r| (r.sku, r.quantity, r.unit_price_minor))
        .collect();
        let lines: Vec<serde_json::Value> = lines
            .into_iter()
            .map(|(sku, quantity, unit_price_minor)| {
                json!({
                    "sku": sku,
                    "quantity": quantity,
                    "unit_price_minor": unit_price_minor,
                    "amount_minor": i64::from(quantity) * unit_price_minor,
                })
            })
            .collect();
        sqlx::query!(
        "INSERT INTO shop_tasks.invoices
                 (order_id, invoice_number, customer_id, payment_id, currency, lines, total_minor, paid_minor, paid_at)
             VALUES ($1, 'INV-' || lpad(nextval('shop_tasks.invoice_numbers')::text, 8, '0'),
                     $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (order_id) DO NOTHING",
        order_id,
        customer_id,
        &args.payment_id,
        &currency,
        serde_json::Value::Array(lines),
        total_minor,
        args.amount_minor,
        paid_at
    )
        .execute(&self.pool)
        .await
        .context("storing the invoice")?;
        let number = invoice_number(&self.pool, order_id)
            .await?
            .context("the invoice just stored")?;
        Ok(json!({"invoice_number": number, "total_minor": total_minor, "currency": currency}))
    }
}

async fn invoice_number(pool: &PgPool, order_id: Uuid) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT invoice_number FROM shop_tasks.invoices WHERE order_id = $1",
        order_id
    )
    .fetch_optional(pool)
    .await?)
}
