//! The events upstream systems publish about our orders, as the process
//! manager sees them (payments and shipments topics).

use crate::{
    Decode, Event, decode_one,
    payments::{PaymentCaptured, PaymentFailed, RefundIssued},
    warehouse::{ShipmentDelivered, ShipmentDispatched},
};

/// Any upstream event about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEvent {
    PaymentCaptured(PaymentCaptured),
    PaymentFailed(PaymentFailed),
    RefundIssued(RefundIssued),
    ShipmentDispatched(ShipmentDispatched),
    ShipmentDelivered(ShipmentDelivered),
}

impl Decode for UpstreamEvent {
    fn decode(
        full_name: &str,
        writer: Option<&apache_avro::Schema>,
        datum: &[u8],
    ) -> crate::Result<Option<Self>> {
        Ok(Some(match full_name {
            PaymentCaptured::FULL_NAME => Self::PaymentCaptured(decode_one(writer, datum)?),
            PaymentFailed::FULL_NAME => Self::PaymentFailed(decode_one(writer, datum)?),
            RefundIssued::FULL_NAME => Self::RefundIssued(decode_one(writer, datum)?),
            ShipmentDispatched::FULL_NAME => Self::ShipmentDispatched(decode_one(writer, datum)?),
            ShipmentDelivered::FULL_NAME => Self::ShipmentDelivered(decode_one(writer, datum)?),
            _ => return Ok(None),
        }))
    }
}

impl UpstreamEvent {
    /// The order the event is about.
    pub fn order_id(&self) -> &str {
        match self {
            Self::PaymentCaptured(e) => e.key(),
            Self::PaymentFailed(e) => e.key(),
            Self::RefundIssued(e) => e.key(),
            Self::ShipmentDispatched(e) => e.key(),
            Self::ShipmentDelivered(e) => e.key(),
        }
    }

    /// When it happened, in milliseconds since the Unix epoch.
    pub fn occurred_at(&self) -> i64 {
        match self {
            Self::PaymentCaptured(e) => e.occurred_at(),
            Self::PaymentFailed(e) => e.occurred_at(),
            Self::RefundIssued(e) => e.occurred_at(),
            Self::ShipmentDispatched(e) => e.occurred_at(),
            Self::ShipmentDelivered(e) => e.occurred_at(),
        }
    }
}
