//! Events of the order aggregate, on `shop.orders.events`. All keyed by `order_id`
//! so one order's events stay in order on one partition.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::{Topic, event::event, timestamp_millis};

/// One product line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

/// An order was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer_id: String,
    pub currency: String,
    pub lines: Vec<OrderLine>,
    pub total_minor: i64,
    #[avro(with = timestamp_millis)]
    pub placed_at: i64,
    /// Where the order came from (v2); `None` in v1 events.
    pub channel: Option<String>,
}

/// A placed order was cancelled before payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
    #[avro(with = timestamp_millis)]
    pub cancelled_at: i64,
}

/// Payment for the order was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderPaid {
    pub order_id: String,
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: String,
    #[avro(with = timestamp_millis)]
    pub paid_at: i64,
}

/// The warehouse dispatched the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderShipped {
    pub order_id: String,
    pub shipment_id: String,
    pub carrier: String,
    #[avro(with = timestamp_millis)]
    pub shipped_at: i64,
}

/// The parcel reached the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderDelivered {
    pub order_id: String,
    pub shipment_id: String,
    #[avro(with = timestamp_millis)]
    pub delivered_at: i64,
}

/// Money was returned to the customer for a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderRefunded {
    pub order_id: String,
    pub refund_id: String,
    pub amount_minor: i64,
    pub currency: String,
    #[avro(with = timestamp_millis)]
    pub refunded_at: i64,
}

event!(
    OrderPlaced,
    "shop.orders.OrderPlaced",
    Topic::Orders,
    order_id,
    placed_at,
    ["v1", "v2"]
);
event!(
    OrderCancelled,
    "shop.orders.OrderCancelled",
    Topic::Orders,
    order_id,
    cancelled_at,
    ["v1"]
);
event!(
    OrderPaid,
    "shop.orders.OrderPaid",
    Topic::Orders,
    order_id,
    paid_at,
    ["v1"]
);
event!(
    OrderShipped,
    "shop.orders.OrderShipped",
    Topic::Orders,
    order_id,
    shipped_at,
    ["v1"]
);
event!(
    OrderDelivered,
    "shop.orders.OrderDelivered",
    Topic::Orders,
    order_id,
    delivered_at,
    ["v1"]
);
event!(
    OrderRefunded,
    "shop.orders.OrderRefunded",
    Topic::Orders,
    order_id,
    refunded_at,
    ["v1"]
);

/// Any event of an order's stream, as the projector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    Placed(OrderPlaced),
    Cancelled(OrderCancelled),
    Paid(OrderPaid),
    Shipped(OrderShipped),
    Delivered(OrderDelivered),
    Refunded(OrderRefunded),
}

impl crate::Decode for OrderEvent {
    fn decode(
        full_name: &str,
        writer: Option<&apache_avro::Schema>,
        datum: &[u8],
    ) -> crate::Result<Option<Self>> {
        use crate::{Event, decode_one};
        Ok(Some(match full_name {
            OrderPlaced::FULL_NAME => Self::Placed(decode_one(writer, datum)?),
            OrderCancelled::FULL_NAME => Self::Cancelled(decode_one(writer, datum)?),
            OrderPaid::FULL_NAME => Self::Paid(decode_one(writer, datum)?),
            OrderShipped::FULL_NAME => Self::Shipped(decode_one(writer, datum)?),
            OrderDelivered::FULL_NAME => Self::Delivered(decode_one(writer, datum)?),
            OrderRefunded::FULL_NAME => Self::Refunded(decode_one(writer, datum)?),
            _ => return Ok(None),
        }))
    }
}

impl OrderEvent {
    /// The order the event belongs to.
    pub fn order_id(&self) -> &str {
        use crate::Event;
        match self {
            Self::Placed(e) => e.key(),
            Self::Cancelled(e) => e.key(),
            Self::Paid(e) => e.key(),
            Self::Shipped(e) => e.key(),
            Self::Delivered(e) => e.key(),
            Self::Refunded(e) => e.key(),
        }
    }
}
