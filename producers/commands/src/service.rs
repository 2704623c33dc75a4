//! The command handlers: load the aggregate, decide, and write state and
//! events in one transaction.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tributary_registry::ContractIds;
use tributary_schemas::{
    Event,
    orders::{OrderCancelled, OrderLine, OrderPlaced},
};
use uuid::Uuid;

use crate::{
    domain::{Invalid, OrderStatus, PlaceOrder},
    outbox::{Causation, OutboxRecord, Route},
};

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A field of the command is invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The order does not exist.
    #[error("order {0} does not exist")]
    NotFound(Uuid),
    /// The order's current state does not allow the command.
    #[error("order {order_id} is {current}: it cannot become {wanted}")]
    IllegalTransition {
        order_id: Uuid,
        current: OrderStatus,
        wanted: OrderStatus,
    },
    /// Anything else; nothing was written.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(error).context("database"))
    }
}

/// What a successful command answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
}

impl Orders {
    /// Handlers writing to `pool`, publishing to topics with `topic_prefix`
    /// under the schema ids in `ids`.
    pub fn new(pool: PgPool, ids: &ContractIds, topic_prefix: &str) -> anyhow::Result<Self> {
        fn route<E: Event>(ids: &ContractIds, topic_prefix: &str) -> anyhow::Result<Route> {
            Ok(Route {
                topic: format!("{topic_prefix}{}", E::TOPIC.name()),
                schema_id: ids
                    .id_of(E::FULL_NAME)
                    .with_context(|| format!("no registered schema for {}", E::FULL_NAME))?,
            })
        }
        Ok(Self {
            pool,
            placed: route::<OrderPlaced>(ids, topic_prefix)?,
            cancelled: route::<OrderCancelled>(ids, topic_prefix)?,
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
    ) -> Result<OrderAccepted, CommandError> {
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
        };
        let record = OutboxRecord::new(&self.placed, &event, causation)?;

        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO commands.orders
                 (order_id, customer_id, status, currency, total_minor, version, placed_at, updated_at)
             VALUES ($1, $2, 'placed', $3, $4, 1, $5, $5)",
        )
        .bind(order_id)
        .bind(order.customer_id)
        .bind(order.currency.code())
        .bind(total_minor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let (line_nos, skus, quantities, prices): (Vec<i32>, Vec<&str>, Vec<i32>, Vec<i64>) = order
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    i as i32 + 1,
                    l.sku.as_str(),
                    l.quantity.get(),
                    l.unit_price.get(),
                )
            })
            .fold(Default::default(), |mut acc, (n, s, q, p)| {
                acc.0.push(n);
                acc.1.push(s);
                acc.2.push(q);
                acc.3.push(p);
                acc
            });
        sqlx::query(
            "INSERT INTO commands.order_lines (order_id, line_no, sku, quantity, unit_price_minor)
             SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::int[], $5::bigint[])",
        )
        .bind(order_id)
        .bind(&line_nos)
        .bind(&skus)
        .bind(&quantities)
        .bind(&prices)
        .execute(&mut *tx)
        .await?;
        record.append(&mut tx).await?;
        tx.commit().await?;

        metrics::counter!("tributary_commands_total", "command" => "place_order").increment(1);
        Ok(OrderAccepted {
            order_id,
            status: OrderStatus::Placed,
            version: 1,
            currency: order.currency.code().to_owned(),
            total_minor,
        })
    }

    /// CancelOrder: a placed order becomes `cancelled`, with `OrderCancelled` in the outbox.
    pub async fn cancel(
        &self,
        order_id: Uuid,
        reason: &str,
        causation: &Causation,
    ) -> Result<OrderAccepted, CommandError> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, i32, String, i64)> = sqlx::query_as(
            "SELECT status, version, currency, total_minor FROM commands.orders WHERE order_id = $1 FOR UPDATE",
        )
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, version, currency, total_minor) =
            row.ok_or(CommandError::NotFound(order_id))?;
        let current =
            OrderStatus::parse(&status).with_context(|| format!("stored status {status:?}"))?;
        if !current.can_become(OrderStatus::Cancelled) {
            return Err(CommandError::IllegalTransition {
                order_id,
                current,
                wanted: OrderStatus::Cancelled,
            });
        }
        let event = OrderCancelled {
            order_id: order_id.to_string(),
            reason: reason.to_owned(),
            cancelled_at: now.timestamp_millis(),
        };
        let record = OutboxRecord::new(&self.cancelled, &event, causation)?;
        sqlx::query(
            "UPDATE commands.orders SET status = 'cancelled', version = version + 1, updated_at = $2 WHERE order_id = $1",
        )
        .bind(order_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        record.append(&mut tx).await?;
        tx.commit().await?;

        metrics::counter!("tributary_commands_total", "command" => "cancel_order").increment(1);
        Ok(OrderAccepted {
            order_id,
            status: OrderStatus::Cancelled,
            version: version + 1,
            currency,
            total_minor,
        })
    }
}

/// Now, truncated to milliseconds: the precision events carry.
fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}
