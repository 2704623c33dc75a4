//! From Kafka bytes to the contract's types: Confluent framing, the writer's
//! schema by id, and the fast path when the writer is our own current schema.

use std::{collections::HashMap, sync::Arc};

use apache_avro::{Schema, reader::datum::GenericDatumReader, writer::datum::GenericDatumWriter};
use tributary_registry::{ContractIds, RegistryClient, WriterSchema};
use tributary_schemas::{Decode, framing};

use crate::DecodeError;

/// Decodes Confluent-framed Avro into a [`Decode`] family.
#[derive(Debug, Clone)]
pub struct AvroDecoder {
    registry: RegistryClient,
    ids: ContractIds,
    /// Reader schemas other than the current one, by record full name.
    pinned: HashMap<String, Arc<Schema>>,
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
        Self {
            registry,
            ids,
            pinned: HashMap::new(),
        }
    }

    /// Reads `full_name` records as a consumer built against `reader` (an
    /// older version of the record) would: every datum is resolved into
    /// `reader` first, so fields `reader` lacks are dropped and fields only
    /// it has take its defaults; the result then becomes the current Rust
    /// type. For a staged rollout (a consumer that must not see a new field
    /// yet) and for testing that old consumers read new events.
    pub fn pin_reader(mut self, full_name: &str, reader: Schema) -> Self {
        self.pinned.insert(full_name.to_owned(), Arc::new(reader));
        self
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
        let ours = self.ids.full_name_of(schema_id);
        if let Some(reader) = ours.and_then(|name| self.pinned.get(name)) {
            let writer = self.writer_schema(schema_id).await?;
            return self.decode_pinned(&writer, reader, schema_id, datum);
        }
        let value = match ours {
            // The writer used our current schema: decode straight into the Rust type.
            Some(full_name) => T::decode(full_name, None, datum),
            None => {
                let writer = self.writer_schema(schema_id).await?;
                if let Some(reader) = self.pinned.get(&writer.full_name) {
                    return self.decode_pinned(&writer, reader, schema_id, datum);
                }
                T::decode(&writer.full_name, Some(&writer.schema), datum)
            }
        }
        .map_err(|e| DecodeError::BadInput(format!("schema id {schema_id}: {e}")))?;
        Ok(value.map(|value| Decoded { value, schema_id }))
    }

    /// The writer's schema, from the registry (cached).
    async fn writer_schema(&self, schema_id: u32) -> Result<Arc<WriterSchema>, DecodeError> {
        self.registry
            .schema_by_id(schema_id)
            .await
            .map_err(|error| match &error {
                tributary_registry::Error::Registry { status: 404, .. } => {
                    DecodeError::BadInput(format!("schema id {schema_id} is not in the registry"))
                }
                tributary_registry::Error::Registry { status, .. } if *status < 500 => {
                    DecodeError::BadInput(error.to_string())
                }
                _ => DecodeError::Unavailable(error.into()),
            })
    }

    /// Writer → pinned reader → current type: the datum as the pinned
    /// reader sees it, re-encoded, then resolved into the current schema.
    fn decode_pinned<T: Decode>(
        &self,
        writer: &WriterSchema,
        reader: &Schema,
        schema_id: u32,
        mut datum: &[u8],
    ) -> Result<Option<Decoded<T>>, DecodeError> {
        let bad = |e: &dyn std::fmt::Display| {
            DecodeError::BadInput(format!("schema id {schema_id}: {e}"))
        };
        let value = GenericDatumReader::builder(&writer.schema)
            .reader_schema(reader)
            .build()
            .and_then(|r| r.read_value(&mut datum))
            .map_err(|e| bad(&e))?;
        let seen = GenericDatumWriter::builder(reader)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .map_err(|e| bad(&e))?;
        let value = T::decode(&writer.full_name, Some(reader), &seen).map_err(|e| bad(&e))?;
        Ok(value.map(|value| Decoded { value, schema_id }))
    }
}
