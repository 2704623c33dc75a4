//! The events the notifier reacts to, with their id and type.

use chrono::{DateTime, Utc};
use serde_json::json;
use tributary_schemas::{
    Decode, Event,
    customers::CustomerRegistered,
    orders::{self, OrderEvent},
};
use uuid::Uuid;

/// An order or customer event, as its deliveries see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShopEvent {
    /// The event's id (its `event_id` header): every delivery's idempotency key.
    pub event_id: Uuid,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The event.
    pub kind: EventKind,
}

/// The events of the topics the notifier reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// On `shop.orders.events`.
    Order(OrderEvent),
    /// On `shop.customers.events`.
    Customer(CustomerRegistered),
}

impl Decode for EventKind {
    fn decode(
        full_name: &str,
        writer: Option<&apache_avro::Schema>,
        datum: &[u8],
    ) -> tributary_schemas::Result<Option<Self>> {
        if full_name == CustomerRegistered::FULL_NAME {
            let customer = tributary_schemas::decode_one(writer, datum)?;
            return Ok(Some(Self::Customer(customer)));
        }
        Ok(OrderEvent::decode(full_name, writer, datum)?.map(Self::Order))
    }
}

/// Every event type a webhook can subscribe to.
pub const EVENT_TYPES: [&str; 7] = [
    orders::OrderPlaced::FULL_NAME,
    orders::OrderCancelled::FULL_NAME,
    orders::OrderPaid::FULL_NAME,
    orders::OrderShipped::FULL_NAME,
    orders::OrderDelivered::FULL_NAME,
    orders::OrderRefunded::FULL_NAME,
    CustomerRegistered::FULL_NAME,
];

impl EventKind {
    /// The record's full name (`shop.orders.OrderPaid`): the event type.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Order(OrderEvent::Placed(_)) => orders::OrderPlaced::FULL_NAME,
            Self::Order(OrderEvent::Cancelled(_)) => orders::OrderCancelled::FULL_NAME,
            Self::Order(OrderEvent::Paid(_)) => orders::OrderPaid::FULL_NAME,
            Self::Order(OrderEvent::Shipped(_)) => orders::OrderShipped::FULL_NAME,
            Self::Order(OrderEvent::Delivered(_)) => orders::OrderDelivered::FULL_NAME,
            Self::Order(OrderEvent::Refunded(_)) => orders::OrderRefunded::FULL_NAME,
            Self::Customer(_) => CustomerRegistered::FULL_NAME,
        }
    }

    /// When it happened, in milliseconds since the epoch.
    pub fn occurred_at_millis(&self) -> i64 {
        match self {
            Self::Order(OrderEvent::Placed(e)) => e.occurred_at(),
            Self::Order(OrderEvent::Cancelled(e)) => e.occurred_at(),
            Self::Order(OrderEvent::Paid(e)) => e.occurred_at(),
            Self::Order(OrderEvent::Shipped(e)) => e.occurred_at(),
            Self::Order(OrderEvent::Delivered(e)) => e.occurred_at(),
            Self::Order(OrderEvent::Refunded(e)) => e.occurred_at(),
            Self::Customer(e) => e.occurred_at(),
        }
    }

    /// The record's fields as JSON (timestamps in epoch milliseconds, as in Avro).
    pub fn data(&self) -> serde_json::Value {
        let value = match self {
            Self::Order(OrderEvent::Placed(e)) => serde_json::to_value(e),
            Self::Order(OrderEvent::Cancelled(e)) => serde_json::to_value(e),
            Self::Order(OrderEvent::Paid(e)) => serde_json::to_value(e),
            Self::Order(OrderEvent::Shipped(e)) => serde_json::to_value(e),
            Self::Order(OrderEvent::Delivered(e)) => serde_json::to_value(e),
            Self::Order(OrderEvent::Refunded(e)) => serde_json::to_value(e),
            Self::Customer(e) => serde_json::to_value(e),
        };
        value.expect("contract records serialize to JSON")
    }
}

impl ShopEvent {
    /// The webhook body: the event's id, type, time and fields.
    pub fn webhook_body(&self) -> String {
        json!({
            "id": self.event_id,
            "type": self.kind.event_type(),
            "occurred_at": self.occurred_at,
            "data": self.kind.data(),
        })
        .to_string()
    }
}
