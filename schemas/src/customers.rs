//! Events of the customer aggregate, on `shop.customers.events`.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::{Topic, event::event, timestamp_millis};

/// A customer signed up at the storefront.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.customers")]
pub struct CustomerRegistered {
    pub customer_id: String,
    pub email: String,
    pub name: String,
    #[avro(with = timestamp_millis)]
    pub registered_at: i64,
}

event!(
    CustomerRegistered,
    "shop.customers.CustomerRegistered",
    Topic::Customers,
    customer_id,
    registered_at,
    ["v1"]
);
