//! The Avro contract between every producer and every consumer of Tributary.
//!
//! `schemas/avro/<record full name>/vN.avsc` holds every version a record has
//! had; the highest is the current one. The Rust types here are bound to the
//! current version, and a test fails if a type and its `.avsc` disagree.
//!
//! Values travel in the Confluent wire format: a zero magic byte, the writer
//! schema's registry id (4 bytes, big-endian), then the Avro binary datum.
//!
//! ```
//! use tributary_schemas::{Event, framing, orders::OrderCancelled};
//!
//! let event = OrderCancelled {
//!     order_id: "0190f1d2-0000-7000-8000-000000000001".into(),
//!     reason: "changed my mind".into(),
//!     cancelled_at: 1_700_000_000_000,
//! };
//! let bytes = framing::encode(42, &event).unwrap();
//! let (schema_id, datum) = framing::split(&bytes).unwrap();
//! assert_eq!(schema_id, 42);
//! assert_eq!(OrderCancelled::decode(datum).unwrap(), event);
//! ```

mod contract;
pub mod customers;
mod event;
pub mod framing;
pub mod orders;
pub mod payments;
pub mod upstream;
pub mod warehouse;

pub use contract::CONTRACT;
pub use event::{Decode, Event, RecordHistory, Topic, decode_one, subject};

/// Errors of encoding and decoding the contract's types.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The value is shorter than the 5-byte Confluent header or its magic byte is not 0.
    #[error("not a Confluent-framed Avro value: {0}")]
    Framing(&'static str),
    /// Avro encoding or decoding failed.
    #[error("avro: {0}")]
    Avro(#[from] apache_avro::Error),
    /// The datum had bytes left over after the record was read.
    #[error("{0} trailing bytes after the Avro datum")]
    Trailing(usize),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Avro schema of a `timestamp-millis` field whose Rust type is `i64`
/// (milliseconds since the Unix epoch, UTC). Used with `#[avro(with = ...)]`.
pub(crate) fn timestamp_millis(
    _: &mut std::collections::HashSet<apache_avro::schema::Name>,
    _: apache_avro::schema::NamespaceRef,
) -> apache_avro::Schema {
    apache_avro::Schema::TimestampMillis
}
