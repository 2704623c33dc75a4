//! From Kafka bytes to order events: Confluent framing, writer schema by id,
//! the fast path when the writer is our own current schema.

use tributary_consumer::DecodeError;
use tributary_registry::{ContractIds, RegistryClient};
use tributary_schemas::{framing, orders::OrderEvent};
use uuid::Uuid;

/// Decodes the order topic's messages.
#[derive(Debug, Clone)]
pub struct Decoder {
    registry: RegistryClient,
    ids: ContractIds,
}

impl Decoder {
    /// A decoder that knows our own schema ids (`ids`) and asks `registry` for others.
    pub fn new(registry: RegistryClient, ids: ContractIds) -> Self {
        Self { registry, ids }
    }

    /// The event in `payload`; `Ok(None)` for a record that is not an order event.
    pub async fn decode(&self, payload: Option<&[u8]>) -> Result<Option<OrderEvent>, DecodeError> {
        let payload =
            payload.ok_or_else(|| DecodeError::BadInput("the message has no value".into()))?;
        let (schema_id, datum) =
            framing::split(payload).map_err(|e| DecodeError::BadInput(e.to_string()))?;
        let event = match self.ids.full_name_of(schema_id) {
            // The writer used our current schema: decode straight into the Rust type.
            Some(full_name) => OrderEvent::decode(full_name, None, datum),
            None => {
                let writer = self
                    .registry
                    .schema_by_id(schema_id)
                    .await
                    .map_err(|error| match &error {
                        tributary_registry::Error::Registry { status: 404, .. } => {
                            DecodeError::BadInput(format!(
                                "schema id {schema_id} is not in the registry"
                            ))
                        }
                        tributary_registry::Error::Registry { status, .. } if *status < 500 => {
                            DecodeError::BadInput(error.to_string())
                        }
                        _ => DecodeError::Unavailable(error.into()),
                    })?;
                OrderEvent::decode(&writer.full_name, Some(&writer.schema), datum)
            }
        }
        .map_err(|e| DecodeError::BadInput(format!("schema id {schema_id}: {e}")))?;
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
