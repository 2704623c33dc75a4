//! Events published by the payment provider on `payments.payments.events`.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::{Topic, event::event, timestamp_millis};

/// Money for an order was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "payments")]
pub struct PaymentCaptured {
    pub payment_id: String,
    pub order_id: String,
    pub amount_minor: i64,
    pub currency: String,
    #[avro(with = timestamp_millis)]
    pub captured_at: i64,
}

/// A payment attempt for an order failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "payments")]
pub struct PaymentFailed {
    pub payment_id: String,
    pub order_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub reason: String,
    #[avro(with = timestamp_millis)]
    pub failed_at: i64,
}

/// Money was returned for a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "payments")]
pub struct RefundIssued {
    pub refund_id: String,
    pub payment_id: String,
    pub order_id: String,
    pub amount_minor: i64,
    pub currency: String,
    #[avro(with = timestamp_millis)]
    pub issued_at: i64,
}

event!(
    PaymentCaptured,
    "payments.PaymentCaptured",
    Topic::Payments,
    order_id,
    captured_at,
    ["v1"]
);
event!(
    PaymentFailed,
    "payments.PaymentFailed",
    Topic::Payments,
    order_id,
    failed_at,
    ["v1"]
);
event!(
    RefundIssued,
    "payments.RefundIssued",
    Topic::Payments,
    order_id,
    issued_at,
    ["v1"]
);
