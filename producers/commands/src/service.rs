//! The command handlers: load the aggregate, decide, and write state and
//! events in one transaction.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tributary_outbox::{Causation, OutboxRecord, Route};
use tributary_registry::ContractIds;
use tributary_schemas::orders::{
    OrderCancelled, OrderDelivered, OrderLine, OrderPaid, OrderPlaced, OrderRefunded, OrderShipped,
};
use uuid::Uuid;

use crate::{
    CommandError,
    domain::{CancelOrder, OrderStatus, PlaceOrder},
    idempotency::{self, Done, IdempotencyKey},
};

/// What a successful order command answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderAccepted {
    pub order_id: Uuid,
    pub status: OrderStatus,
    /// Events in the order's stream after this command.
    pub version: i32,
    pub currency: String,
    pub total_minor: i64,
}

/// The order aggregate's command handlers.
#[derive(Debug, Clone)]
pub struct Orders {
    pool: PgPool,
    placed: Route,
    cancelled: Route,
    /// Where `OrderPaid` goes (the process manager's transitions).
    pub paid: Route,
    /// Where `OrderShipped` goes.
    pub shipped: Route,
    /// Where `OrderDelivered` goes.
    pub delivered: Route,
    /// Where `OrderRefunded` goes.
    pub refunded: Route,
}

impl Orders {
    /// Handlers writing to `pool`, publishing to topics with `topic_prefix`
    /// under the schema ids in `ids`.
    pub fn new(pool: PgPool, ids: &ContractIds, topic_prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            placed: Route::of::<OrderPlaced>(ids, topic_prefix)?,
            cancelled: Route::of::<OrderCancelled>(ids, topic_prefix)?,
            paid: Route::of::<OrderPaid>(ids, topic_prefix)?,
            shipped: Route::of::<OrderShipped>(ids, topic_prefix)?,
            delivered: Route::of::<OrderDelivered>(ids, topic_prefix)?,
            refunded: Route::of::<OrderRefunded>(ids, topic_prefix)?,
        })
    }

    /// The pool the handlers write to.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// PlaceOrder: a new order in state `placed`, and `OrderPlaced` in the outbox.
    pub async fn place(
        &self,
        order: &PlaceOrder,
        causation: &Causation,
        key: Option<&IdempotencyKey>,
    ) -> Result<Done<OrderAccepted>, CommandError> {
        let order_id = Uuid::now_v7();
        let now = now_millis();
        let total_minor = order.total_minor();
        let event = OrderPlaced {
            order_id: order_id.to_string(),
            customer_id: order.customer_id.to_string(),
            currency: order.currency.code().to_owned(),
            lines: order
                .lines
                .iter()
                .map(|l| OrderLine {
                    sku: l.sku.as_str().to_owned(),
                    quantity: l.quantity.get(),
                    unit_price_minor: l.unit_price.get(),
                })
                .collect(),
            total_minor,
            placed_at: now.timestamp_millis(),
            channel: order.channel.clone(),
        };
        let record = OutboxRecord::new(&self.placed, &event, causation)?;
        let accepted = OrderAccepted {
            order_id,
            status: OrderStatus::Placed,
            version: 1,
            currency: order.currency.code().to_owned(),
            total_minor,
        };
        let done =
            idempotency::run_statement(&self.pool, key, async move |tx: &mut PgConnection| {
                let line_nos: Vec<i32> = (1..=order.lines.len() as i32).collect();
                let skus: Vec<&str> = order.lines.iter().map(|l| l.sku.as_str()).collect();
                let quantities: Vec<i32> = order.lines.iter().map(|l| l.quantity.get()).collect();
                let prices: Vec<i64> = order.lines.iter().map(|l| l.unit_price.get()).collect();
                // The order, its lines and its event in one statement: one round
            // trip. The event goes in through the outbox crate's insert
            // (`outbox_query!` appends it to this statement; the statement is
            // inline because the macro composes literals, not files).
            tributary_outbox::outbox_query!(
                "WITH new_order AS (
                     INSERT INTO commands.orders
                         (order_id, customer_id, status, currency, total_minor, version, placed_at, updated_at)
                     VALUES ($6, $7, 'placed', $8, $9, 1, $10, $10)
                 ), new_lines AS (
                     INSERT INTO commands.order_lines (order_id, line_no, sku, quantity, unit_price_minor)
                     SELECT $6, * FROM UNNEST($11::int[], $12::text[], $13::int[], $14::bigint[])
                 ) ",
                "VALUES ($1, $2, $3, $4, $5)",
                record.event_id,
                record.topic,
                record.key,
                record.value,
                record.headers_json(),
                order_id,
                order.customer_id,
                order.currency.code(),
                total_minor,
                now,
                &line_nos,
                &skus as &[&str],
                &quantities,
                &prices,
            )
            .execute(&mut *tx)
                .await
                .map_err(|error| match &error {
                    sqlx::Error::Database(db) if db.constraint() == Some(SKU_IN_CATALOG) => {
                        CommandError::UnknownSku {
                            field: "lines".into(),
                            sku: String::new(),
                        }
                    }
                    _ => error.into(),
                })?;
                Ok(accepted)
            })
            .await;
        let done = match done {
            // Name the first line at fault (the statement only says one is).
            Err(CommandError::UnknownSku { .. }) => {
                let skus: Vec<&str> = order.lines.iter().map(|l| l.sku.as_str()).collect();
                let (line, sku) = crate::catalog::first_unknown(&self.pool, &skus)
                    .await?
                    .unwrap_or_else(|| (0, skus[0].to_owned()));
                return Err(CommandError::UnknownSku {
                    field: format!("lines[{line}].sku"),
                    sku,
                });
            }
            done => done?,
        };
        if !done.replayed {
            metrics::counter!("tributary_commands_total", "command" => "place_order").increment(1);
        }
        Ok(done)
    }

    /// CancelOrder: a placed order becomes `cancelled`, with `OrderCancelled`
    /// in the outbox. With `expected_version`, refused unless the order is at
    /// that version.
    pub async fn cancel(
        &self,
        order_id: Uuid,
        cancel: &CancelOrder,
        causation: &Causation,
        key: Option<&IdempotencyKey>,
    ) -> Result<Done<OrderAccepted>, CommandError> {
        let now = now_millis();
        let event = OrderCancelled {
            order_id: order_id.to_string(),
            reason: cancel.reason.clone(),
            cancelled_at: now.timestamp_millis(),
        };
        let record = OutboxRecord::new(&self.cancelled, &event, causation)?;
        let done = idempotency::run(&self.pool, key, async move |tx: &mut PgConnection| {
            transition(
                tx,
                order_id,
                OrderStatus::Cancelled,
                cancel.expected_version,
                |_| Ok(()),
                &record,
                now,
            )
            .await
        })
        .await?;
        if !done.replayed {
            metrics::counter!("tributary_commands_total", "command" => "cancel_order").increment(1);
        }
        Ok(done)
    }
}

/// The foreign key from order lines to the product catalog.
const SKU_IN_CATALOG: &str = "order_lines_sku_in_catalog";

/// An order's state as a transition sees it.
#[derive(Debug, Clone)]
pub struct Current {
    /// Its currency (ISO 4217, as stored: `char(3)`).
    pub currency: String,
    /// Its total in minor units.
    pub total_minor: i64,
}

/// The state machine's one door: moves order `order_id` to `wanted` and
/// appends `record` (its event), inside the caller's transaction. Refused,
/// with nothing written, when the order is missing, not at
/// `expected_version`, cannot become `wanted`, or fails `check`.
pub async fn transition(
    conn: &mut PgConnection,
    order_id: Uuid,
    wanted: OrderStatus,
    expected_version: Option<i32>,
    check: impl FnOnce(&Current) -> Result<(), CommandError>,
    record: &OutboxRecord,
    now: DateTime<Utc>,
) -> Result<OrderAccepted, CommandError> {
    let row = sqlx::query!(
        "SELECT status, version, currency, total_minor FROM commands.orders WHERE order_id = $1 FOR UPDATE",
        order_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CommandError::NotFound(order_id))?;
    let (status, version, currency, total_minor) =
        (row.status, row.version, row.currency, row.total_minor);
    if let Some(expected) = expected_version
        && expected != version
    {
        return Err(CommandError::StaleVersion {
            order_id,
            expected,
            current: version,
        });
    }
    let status =
        OrderStatus::parse(&status).with_context(|| format!("stored status {status:?}"))?;
    if !status.can_become(wanted) {
        return Err(CommandError::IllegalTransition {
            order_id,
            current: status,
            wanted,
        });
    }
    let current = Current {
        currency,
        total_minor,
    };
    check(&current)?;
    sqlx::query!(
        "UPDATE commands.orders SET status = $2, version = version + 1, updated_at = $3 WHERE order_id = $1",
        order_id,
        wanted.as_str(),
        now
    )
        .execute(&mut *conn)
        .await?;
    record.append(conn).await?;
    Ok(OrderAccepted {
        order_id,
        status: wanted,
        version: version + 1,
        currency: current.currency,
        total_minor: current.total_minor,
    })
}

/// Now, truncated to milliseconds: the precision events carry.
pub fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// Whether order `order_id` exists (inside the caller's transaction).
pub async fn order_exists(conn: &mut PgConnection, order_id: Uuid) -> Result<bool, CommandError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM commands.orders WHERE order_id = $1) AS "exists!""#,
        order_id
    )
    .fetch_one(conn)
    .await?)
}
