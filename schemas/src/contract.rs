//! The contract: every record with its history (the registry registers them
//! and its test checks each).

use crate::{Event, RecordHistory};

/// Every record of the contract with its history; the registry test checks each.
pub static CONTRACT: &[fn() -> &'static RecordHistory] = &[
    <crate::customers::CustomerRegistered as Event>::history,
    <crate::orders::OrderPlaced as Event>::history,
    <crate::orders::OrderCancelled as Event>::history,
    <crate::orders::OrderPaid as Event>::history,
    <crate::orders::OrderShipped as Event>::history,
    <crate::orders::OrderDelivered as Event>::history,
    <crate::orders::OrderRefunded as Event>::history,
    <crate::payments::PaymentCaptured as Event>::history,
    <crate::payments::PaymentFailed as Event>::history,
    <crate::payments::RefundIssued as Event>::history,
    <crate::warehouse::ShipmentDispatched as Event>::history,
    <crate::warehouse::ShipmentDelivered as Event>::history,
];
