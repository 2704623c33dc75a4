//! Order events from Kafka bytes, with the ids the read model relies on checked.

use tributary_consumer::{AvroDecoder, DecodeError};
use tributary_schemas::orders::OrderEvent;
use uuid::Uuid;

/// Decodes the order topic's messages.
#[derive(Debug, Clone)]
pub struct Decoder {
    avro: AvroDecoder,
}

impl Decoder {
    /// A decoder over `avro`.
    pub fn new(avro: AvroDecoder) -> Self {
        Self { avro }
    }

    /// The event in `payload`; `Ok(None)` for a record that is not an order event.
    pub async fn decode(&self, payload: Option<&[u8]>) -> Result<Option<OrderEvent>, DecodeError> {
        let event = self
            .avro
            .decode::<OrderEvent>(payload)
            .await?
            .map(|d| d.value);
        if let Some(event) = &event {
            check_ids(event)?;
        }
        Ok(event)
    }
}

/// The read model keys orders by UUID: refuse an event whose ids are not.
fn check_ids(event: &OrderEvent) -> Result<(), DecodeError> {
    let order_id = event.order_id();
    Uuid::parse_str(order_id)
        .map_err(|_| DecodeError::BadInput(format!("order_id {order_id:?} is not a UUID")))?;
    if let OrderEvent::Placed(placed) = event {
        Uuid::parse_str(&placed.customer_id).map_err(|_| {
            DecodeError::BadInput(format!(
                "customer_id {:?} is not a UUID",
                placed.customer_id
            ))
        })?;
    }
    Ok(())
}
