//! The projector: builds the read models from the order events, with the
//! consumer runtime of `tributary-consumer` (offsets stored in the same
//! transaction as the read-model changes; effectively-once).

pub mod aggregates;
pub mod analysts;
mod decode;
pub mod orders;
pub mod rebuild;

use chrono::{DateTime, Utc};
use rdkafka::message::{Message, OwnedMessage};
use sqlx::PgConnection;
use tributary_consumer::{Consumer, DecodeError, Envelope, Handler};
use tributary_schemas::{Event, Topic, orders::OrderEvent};

pub use decode::Decoder;

/// The read side's tables (`read_model` schema).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The name under which the orders projection stores its offsets.
pub const ORDERS_PROJECTION: &str = "orders";

/// Empties `projection`'s tables in `read_model` (the benchmark's ceiling
/// run writes them before the projector does).
///
/// Dynamic SQL: TRUNCATE takes no bound parameters, and the table names are
/// the projection's own constants, never input.
pub async fn truncate(pool: &sqlx::PgPool, projection: &Projection) -> sqlx::Result<()> {
    let tables = projection
        .tables
        .iter()
        .map(|t| format!("read_model.{t}"))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {tables}")))
        .execute(pool)
        .await?;
    Ok(())
}

/// A projection: a consumer of some topics that maintains some read-model tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projection {
    /// Its name: where its offsets are stored (`consumer.offsets.consumer`) and what `ctl projection` takes.
    pub name: &'static str,
    /// The contract topics it consumes.
    pub topics: &'static [Topic],
    /// The tables it maintains, in the `read_model` schema.
    pub tables: &'static [&'static str],
}

/// Every projection of the read side.
pub const PROJECTIONS: &[Projection] = &[Projection {
    name: ORDERS_PROJECTION,
    topics: &[Topic::Orders],
    tables: &[
        "orders",
        "order_lines",
        "order_timeline",
        "daily_sales",
        "product_sales",
        "customer_summary",
        "fulfilment",
    ],
}];

/// The projection called `name`.
pub fn projection(name: &str) -> Option<&'static Projection> {
    PROJECTIONS.iter().find(|p| p.name == name)
}

/// The default consumer group of the projector.
pub const GROUP: &str = "tributary-projector";

/// The projector: the consumer runtime driving [`OrdersProjection`].
pub type Projector = Consumer<OrdersProjection>;

/// The schema the read models are served from.
pub const READ_MODEL_SCHEMA: &str = "read_model";

/// Projects order events into the read models of [`ORDERS_PROJECTION`].
#[derive(Debug)]
pub struct OrdersProjection {
    decoder: Decoder,
    name: String,
    schema: String,
}

impl OrdersProjection {
    /// The live projection: offsets under [`ORDERS_PROJECTION`], tables in `read_model`.
    pub fn new(decoder: Decoder) -> Self {
        Self::into_schema(decoder, ORDERS_PROJECTION, READ_MODEL_SCHEMA)
    }

    /// A projection storing its offsets under `name` and writing the tables
    /// of `schema` (a rebuild's fresh tables).
    pub fn into_schema(decoder: Decoder, name: &str, schema: &str) -> Self {
        Self {
            decoder,
            name: name.to_owned(),
            schema: schema.to_owned(),
        }
    }
}

/// Applies `events`, in order, to the read models in `schema`, inside the
/// caller's transaction: the per-order tables statement by statement, then
/// the aggregates once.
pub async fn project(
    conn: &mut PgConnection,
    schema: &str,
    events: &[OrderEvent],
) -> anyhow::Result<()> {
    sqlx::query!("SELECT set_config('search_path', $1, true)", schema)
        .fetch_one(&mut *conn)
        .await?;
    let mut deltas = aggregates::Deltas::default();
    orders::apply(&mut *conn, events, &mut deltas).await?;
    deltas.flush(conn).await
}

impl Handler for OrdersProjection {
    type Event = OrderEvent;

    fn name(&self) -> &str {
        &self.name
    }

    async fn decode(&self, message: &OwnedMessage) -> Result<Option<OrderEvent>, DecodeError> {
        self.decoder.decode(message.payload()).await
    }

    fn occurred_at(&self, event: &OrderEvent) -> Option<DateTime<Utc>> {
        let millis = match event {
            OrderEvent::Placed(e) => e.occurred_at(),
            OrderEvent::Cancelled(e) => e.occurred_at(),
            OrderEvent::Paid(e) => e.occurred_at(),
            OrderEvent::Shipped(e) => e.occurred_at(),
            OrderEvent::Delivered(e) => e.occurred_at(),
            OrderEvent::Refunded(e) => e.occurred_at(),
        };
        DateTime::from_timestamp_millis(millis)
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: Vec<Envelope<OrderEvent>>,
    ) -> anyhow::Result<()> {
        let events: Vec<OrderEvent> = events.into_iter().map(|e| e.event).collect();
        project(conn, &self.schema, &events).await
    }
}
