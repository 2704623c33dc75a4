//! Reminders for orders left unpaid: a periodic task that fans out one task
//! per customer, as a chord.

use anyhow::{Context, anyhow};
use apache_avro::AvroSchema;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tributary_notifier::email::{self, EmailArgs, SendEmail};
use tributary_tasks::{Enqueue, Task, TaskContext, TaskError, results::State};
use uuid::Uuid;

/// Most customers one run reminds; the next run takes the rest.
const MAX_CUSTOMERS: i64 = 10_000;

/// Which orders count as left unpaid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.tasks")]
pub struct UnpaidRemindersArgs {
    /// Placed at least this many hours ago and still unpaid.
    pub older_than_hours: i32,
}

/// Finds the customers to remind and starts one [`RemindCustomer`] each.
#[derive(Debug, Clone)]
pub struct UnpaidReminders {
    pool: PgPool,
}

impl UnpaidReminders {
    /// Reading the read model in `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Task for UnpaidReminders {
    const NAME: &'static str = "shop.unpaid_reminders";
    type Args = UnpaidRemindersArgs;

    async fn run(
        &self,
        ctx: TaskContext,
        args: UnpaidRemindersArgs,
    ) -> Result<serde_json::Value, TaskError> {
        if args.older_than_hours < 0 {
            return Err(TaskError::Permanent(anyhow!(
                "older_than_hours must not be negative"
            )));
        }
        let customers: Vec<(Uuid, Vec<Uuid>)> = sqlx::query!(
            r#"SELECT o.customer_id, array_agg(o.order_id ORDER BY o.placed_at) AS "order_ids!"
             FROM read_model.orders o
             WHERE o.status = 'placed'
               AND o.placed_at < now() - make_interval(hours => $1)
               AND NOT EXISTS (SELECT 1 FROM shop_tasks.reminders r WHERE r.order_id = o.order_id)
             GROUP BY o.customer_id
             ORDER BY o.customer_id
             LIMIT $2"#,
            args.older_than_hours,
            MAX_CUSTOMERS,
        )
        .fetch_all(&self.pool)
        .await
        .context("finding unpaid orders")?
        .into_iter()
        .map(|r| (r.customer_id, r.order_ids))
        .collect();
        if customers.is_empty() {
            return Ok(json!({"customers": 0}));
        }
        let subtasks = customers
            .iter()
            .map(|(customer_id, orders)| {
                Enqueue::new::<RemindCustomer>(&RemindArgs {
                    customer_id: customer_id.to_string(),
                    order_ids: orders.iter().map(Uuid::to_string).collect(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let chord_id = ctx
            .chord(
                subtasks,
                Enqueue::new::<RemindersDone>(&RemindersDoneArgs {})?,
            )
            .await?;
        Ok(json!({"customers": customers.len(), "chord_id": chord_id}))
    }
}

/// One customer's unpaid orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.tasks")]
pub struct RemindArgs {
    pub customer_id: String,
    pub order_ids: Vec<String>,
}

/// E-mails one customer about their orders still unpaid, once per order.
#[derive(Debug, Clone)]
pub struct RemindCustomer {
    pool: PgPool,
    email: SendEmail,
}

impl RemindCustomer {
    /// Sending through `email`.
    pub fn new(pool: PgPool, email: SendEmail) -> Self {
        Self { pool, email }
    }
}

impl Task for RemindCustomer {
    const NAME: &'static str = "shop.remind_unpaid";
    type Args = RemindArgs;

    async fn run(
        &self,
        ctx: TaskContext,
        args: RemindArgs,
    ) -> Result<serde_json::Value, TaskError> {
        let customer_id = Uuid::parse_str(&args.customer_id)
            .map_err(|e| TaskError::Permanent(anyhow!("customer_id: {e}")))?;
        let order_ids = args
            .order_ids
            .iter()
            .map(|id| Uuid::parse_str(id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TaskError::Permanent(anyhow!("order_ids: {e}")))?;
        // Paid or cancelled since the fan-out: no longer worth a reminder.
        let orders: Vec<(Uuid, i64, String, DateTime<Utc>)> = sqlx::query!(
            "SELECT order_id, total_minor, currency, placed_at FROM read_model.orders
             WHERE order_id = ANY($1) AND customer_id = $2 AND status = 'placed'
             ORDER BY placed_at",
            &order_ids,
            customer_id,
        )
        .fetch_all(&self.pool)
        .await
        .context("reading the orders")?
        .into_iter()
        .map(|r| (r.order_id, r.total_minor, r.currency, r.placed_at))
        .collect();
        if orders.is_empty() {
            return Ok(json!({"reminded": 0}));
        }
        let key = format!(
            "reminder:{}",
            orders
                .iter()
                .map(|(id, ..)| id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let context = json!({
            "orders": orders.iter().map(|(order_id, total_minor, currency, placed_at)| json!({
                "order_id": order_id,
                "total_minor": total_minor,
                "currency": currency,
                "placed_at": placed_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            })).collect::<Vec<_>>(),
        });
        let sent = self
            .email
            .run(
                ctx,
                EmailArgs {
                    template: email::UNPAID_REMINDER.to_owned(),
                    to_address: None,
                    to_customer: Some(customer_id.to_string()),
                    key,
                    context: context.to_string(),
                },
            )
            .await?;
        let reminded: Vec<Uuid> = orders.iter().map(|(id, ..)| *id).collect();
        sqlx::query!(
            "INSERT INTO shop_tasks.reminders (order_id, customer_id)
             SELECT unnest($1::uuid[]), $2 ON CONFLICT (order_id) DO NOTHING",
            &reminded,
            customer_id
        )
        .execute(&self.pool)
        .await
        .context("recording the reminders")?;
        Ok(json!({"reminded": reminded.len(), "email": sent}))
    }
}

/// The chord's callback's arguments: none, it reads its members' results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.tasks")]
pub struct RemindersDoneArgs {}

/// Sums up a reminder run once every customer's task has finished.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemindersDone;

impl Task for RemindersDone {
    const NAME: &'static str = "shop.unpaid_reminders.done";
    type Args = RemindersDoneArgs;

    async fn run(
        &self,
        ctx: TaskContext,
        _: RemindersDoneArgs,
    ) -> Result<serde_json::Value, TaskError> {
        let results = ctx.chord_results().await?;
        let succeeded = results
            .iter()
            .filter(|row| row.state == State::Succeeded.as_str())
            .count();
        let orders: i64 = results
            .iter()
            .filter_map(|row| row.result.as_ref()?.get("reminded")?.as_i64())
            .sum();
        Ok(json!({
            "customers": results.len(),
            "succeeded": succeeded,
            "failed": results.len() - succeeded,
            "orders_reminded": orders,
        }))
    }
}
