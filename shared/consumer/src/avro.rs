//! From Kafka bytes to the contract's types: Confluent framing, the writer's
//! schema by id, and the fast path when the writer is our own current schema.

use tributary_registry::{ContractIds, RegistryClient};
use tributary_schemas::{Decode, framing};

use crate::DecodeError;

/// Decodes Confluent-framed Avro into a [`Decode`] family.
#[derive(Debug, Clone)]
pub struct AvroDecoder {
    registry: RegistryClient,
    ids: ContractIds,
}

/// A decoded value and the writer schema id it came with.
#[derive(Debug, Clone)]
pub struct Decoded<T> {
    /// The decoded record.
    pub value: T,
    /// The id of the schema it was written with.
    pub schema_id: u32,
}

impl AvroDecoder {
    /// A decoder that knows our own schema ids (`ids`) and asks `registry` for others.
    pub fn new(registry: RegistryClient, ids: ContractIds) -> Self {
        Self { registry, ids }
    }

    /// The record in `payload`; `Ok(None)` for a record outside the family `T`.
    pub async fn decode<T: Decode>(
        &self,
        payload: Option<&[u8]>,
    ) -> Result<Option<Decoded<T>>, DecodeError> {
        let payload =
            payload.ok_or_else(|| DecodeError::BadInput("the message has no value".into()))?;
        let (schema_id, datum) =
            framing::split(payload).map_err(|e| DecodeError::BadInput(e.to_string()))?;
        let value = match self.ids.full_name_of(schema_id) {
            // The writer used our current schema: decode straight into the Rust type.
            Some(full_name) => T::decode(full_name, None, datum),
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
                T::decode(&writer.full_name, Some(&writer.schema), datum)
            }
        }
        .map_err(|e| DecodeError::BadInput(format!("schema id {schema_id}: {e}")))?;
        Ok(value.map(|value| Decoded { value, schema_id }))
    }
}
