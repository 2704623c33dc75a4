//! The projector: builds the read models from the order events, with the
//! consumer runtime of `tributary-consumer` (offsets stored in the same
//! transaction as the read-model changes; effectively-once).

mod decode;
pub mod orders;

use chrono::{DateTime, Utc};
use rdkafka::message::{Message, OwnedMessage};
use sqlx::PgConnection;
use tributary_consumer::{Consumer, DecodeError, Envelope, Handler};
use tributary_schemas::{Event, orders::OrderEvent};

pub use decode::Decoder;

/// The read side's tables (`read_model` schema).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The name under which the orders projection stores its offsets.
pub const ORDERS_PROJECTION: &str = "orders";

/// The default consumer group of the projector.
pub const GROUP: &str = "tributary-projector";

/// The projector: the consumer runtime driving [`OrdersProjection`].
pub type Projector = Consumer<OrdersProjection>;

/// Projects order events into `read_model.orders`.
#[derive(Debug)]
pub struct OrdersProjection {
    decoder: Decoder,
}

impl OrdersProjection {
    /// A projection decoding with `decoder`.
    pub fn new(decoder: Decoder) -> Self {
        Self { decoder }
    }
}

impl Handler for OrdersProjection {
    type Event = OrderEvent;

    fn name(&self) -> &str {
        ORDERS_PROJECTION
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
        orders::apply(conn, &events).await
    }
}
