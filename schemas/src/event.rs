//! What ties a Rust type to its topic, its registry subject and its `.avsc`
//! history: the [`Event`] trait and the `event!` macro the event modules use.

use std::sync::OnceLock;

use apache_avro::{
    AvroSchema, Schema, reader::datum::SpecificDatumReader, writer::datum::GenericDatumWriter,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// The topics of the shop, by their wire name (`<context>.<aggregate>.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `shop.customers.events`
    Customers,
    /// `shop.orders.events`
    Orders,
    /// `payments.payments.events`, published by the payment provider.
    Payments,
    /// `warehouse.shipments.events`, published by the warehouse.
    Shipments,
}

impl Topic {
    /// Every topic of the contract.
    pub const ALL: [Topic; 4] = [
        Topic::Customers,
        Topic::Orders,
        Topic::Payments,
        Topic::Shipments,
    ];

    /// The topic's name on the wire, before any deployment prefix.
    pub const fn name(self) -> &'static str {
        match self {
            Topic::Customers => "shop.customers.events",
            Topic::Orders => "shop.orders.events",
            Topic::Payments => "payments.payments.events",
            Topic::Shipments => "warehouse.shipments.events",
        }
    }
}

/// The registry subject of a record on a topic (record-name-per-topic strategy).
pub fn subject(topic: &str, full_name: &str) -> String {
    format!("{topic}-{full_name}")
}

/// Every version a record of the contract has had, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct RecordHistory {
    /// The record's full name, e.g. `shop.orders.OrderPlaced`.
    pub full_name: &'static str,
    /// The topic the record travels on.
    pub topic: Topic,
    /// The `.avsc` text of each version, oldest first; the last is current.
    pub versions: &'static [&'static str],
}

impl RecordHistory {
    /// The `.avsc` text of the current version.
    pub fn current(&self) -> &'static str {
        self.versions
            .last()
            .expect("a record has at least one version")
    }
}

/// A domain event of the contract: a Rust type bound to the current version of its `.avsc`.
pub trait Event: Serialize + DeserializeOwned + AvroSchema + Send + Sync + Sized + 'static {
    /// The record's full name, e.g. `shop.orders.OrderPlaced`.
    const FULL_NAME: &'static str;
    /// The topic the event travels on.
    const TOPIC: Topic;

    /// The aggregate id the event is keyed by.
    fn key(&self) -> &str;

    /// When the event happened, in milliseconds since the Unix epoch (UTC).
    fn occurred_at(&self) -> i64;

    /// The record's history in the contract.
    fn history() -> &'static RecordHistory;

    /// The current `.avsc`, parsed once.
    fn schema() -> &'static Schema;

    /// Encodes the event as an Avro binary datum with the current schema.
    fn encode(&self) -> Result<Vec<u8>>;

    /// Decodes a datum written with the current schema straight into the Rust
    /// type (no intermediate value tree). Rejects trailing bytes.
    fn decode(datum: &[u8]) -> Result<Self>;

    /// Decodes a datum written with another version of the record, resolving
    /// it into the current schema (slower: goes through an Avro value tree).
    fn decode_resolving(writer: &Schema, mut datum: &[u8]) -> Result<Self> {
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(writer)
            .reader_schema(Self::schema())
            .build()?;
        let value = reader.read_value(&mut datum)?;
        if !datum.is_empty() {
            return Err(Error::Trailing(datum.len()));
        }
        Ok(apache_avro::from_value(&value)?)
    }
}

/// A family of records that share a topic, decoded by record name: what a
/// consumer of that topic turns messages into.
pub trait Decode: Sized {
    /// Decodes a datum of the record `full_name`. `writer` is the writer's
    /// schema when it differs from the current one (then the datum is
    /// resolved into the current schema); `None` takes the fast path.
    /// `Ok(None)` for a record outside the family.
    fn decode(full_name: &str, writer: Option<&Schema>, datum: &[u8]) -> Result<Option<Self>>;
}

/// Decodes one record of a family: the fast path without a writer schema.
pub fn decode_one<T: Event>(writer: Option<&Schema>, datum: &[u8]) -> Result<T> {
    match writer {
        None => T::decode(datum),
        Some(writer) => T::decode_resolving(writer, datum),
    }
}

/// Cached, per event type: the parsed schema, a writer and a direct reader.
pub(crate) struct Codec<T: AvroSchema> {
    schema: &'static Schema,
    writer: GenericDatumWriter<'static>,
    reader: SpecificDatumReader<T>,
}

impl<T: AvroSchema + Serialize + DeserializeOwned> Codec<T> {
    pub(crate) fn get(cell: &'static OnceLock<Codec<T>>, avsc: &'static str) -> &'static Self {
        cell.get_or_init(|| {
            let schema: &'static Schema = Box::leak(Box::new(
                Schema::parse_str(avsc).expect("the contract's .avsc files parse (tested)"),
            ));
            Codec {
                schema,
                writer: GenericDatumWriter::builder(schema)
                    .build()
                    .expect("a parsed schema resolves"),
                reader: SpecificDatumReader::<T>::builder()
                    .build()
                    .expect("a derived schema resolves"),
            }
        })
    }

    pub(crate) fn schema(&self) -> &'static Schema {
        self.schema
    }

    pub(crate) fn encode(&self, value: &T) -> Result<Vec<u8>> {
        Ok(self.writer.write_ser_to_vec(value)?)
    }

    pub(crate) fn decode(&self, mut datum: &[u8]) -> Result<T> {
        let value = self.reader.read(&mut datum)?;
        if !datum.is_empty() {
            return Err(Error::Trailing(datum.len()));
        }
        Ok(value)
    }
}

/// Implements [`Event`] for a record: `event!(Type, "full.Name", Topic::X, key_field, time_field, ["v1", ...])`.
macro_rules! event {
    ($ty:ty, $full_name:literal, $topic:expr, $key:ident, $time:ident, [$($version:literal),+]) => {
        impl $crate::Event for $ty {
            const FULL_NAME: &'static str = $full_name;
            const TOPIC: $crate::Topic = $topic;

            fn key(&self) -> &str {
                &self.$key
            }

            fn occurred_at(&self) -> i64 {
                self.$time
            }

            fn history() -> &'static $crate::RecordHistory {
                static HISTORY: $crate::RecordHistory = $crate::RecordHistory {
                    full_name: $full_name,
                    topic: $topic,
                    versions: &[$(include_str!(concat!("../avro/", $full_name, "/", $version, ".avsc"))),+],
                };
                &HISTORY
            }

            fn schema() -> &'static apache_avro::Schema {
                Self::codec().schema()
            }

            fn encode(&self) -> $crate::Result<Vec<u8>> {
                Self::codec().encode(self)
            }

            fn decode(datum: &[u8]) -> $crate::Result<Self> {
                Self::codec().decode(datum)
            }
        }

        impl $ty {
            fn codec() -> &'static $crate::event::Codec<$ty> {
                static CODEC: std::sync::OnceLock<$crate::event::Codec<$ty>> = std::sync::OnceLock::new();
                $crate::event::Codec::get(&CODEC, <$ty as $crate::Event>::history().current())
            }
        }
    };
}
pub(crate) use event;
