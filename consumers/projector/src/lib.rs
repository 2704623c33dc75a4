//! The projector: consumes order events and builds the read models, storing
//! the consumed offsets in the same PostgreSQL transaction as the changes.
//!
//! Effectively-once: on every partition assignment the consumer seeks to the
//! offsets stored beside the read model; each batch locks its partition's
//! offset row, skips what was already applied, applies the rest and advances
//! the offset in one transaction. A crash at any point neither loses nor
//! double-applies an event, and a stale instance that lost its partition
//! cannot apply a batch twice.

mod decode;
mod offsets;
pub mod orders;
mod runtime;
mod settings;

pub use decode::{DecodeError, Decoder};
pub use runtime::{Batch, Projector};
pub use settings::ProjectorSettings;

/// The read side's tables (`read_model` schema).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The name under which the orders projection stores its offsets.
pub const ORDERS_PROJECTION: &str = "orders";
