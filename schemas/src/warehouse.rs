//! Events published by the warehouse on `warehouse.shipments.events`.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::{Topic, event::event, timestamp_millis};

/// The parcel for an order left the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "warehouse")]
pub struct ShipmentDispatched {
    pub shipment_id: String,
    pub order_id: String,
    pub carrier: String,
    pub tracking_number: String,
    #[avro(with = timestamp_millis)]
    pub dispatched_at: i64,
}

/// The carrier delivered the parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "warehouse")]
pub struct ShipmentDelivered {
    pub shipment_id: String,
    pub order_id: String,
    #[avro(with = timestamp_millis)]
    pub delivered_at: i64,
}

event!(
    ShipmentDispatched,
    "warehouse.ShipmentDispatched",
    Topic::Shipments,
    order_id,
    dispatched_at,
    ["v1"]
);
event!(
    ShipmentDelivered,
    "warehouse.ShipmentDelivered",
    Topic::Shipments,
    order_id,
    delivered_at,
    ["v1"]
);
