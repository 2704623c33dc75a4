//! The command side: commands are validated against the order aggregate,
//! and the aggregate's new state and its events are written in one PostgreSQL
//! transaction (the transactional outbox, `tributary-outbox`). The relay
//! publishes them later.
//!
//! ```text
//! POST /customers           RegisterCustomer → 201, CustomerRegistered in the outbox
//! POST /orders              PlaceOrder       → 201, OrderPlaced in the outbox
//! POST /orders/{id}/cancel  CancelOrder      → 200, OrderCancelled in the outbox
//! ```
//!
//! Every command takes an optional `Idempotency-Key` header: a retry with the
//! same key and request gets the first response again (`Idempotent-Replayed:
//! true`) without a second effect; the same key with another request gets 422.

pub mod catalog;
mod customers;
pub mod domain;
mod error;
pub mod idempotency;
mod service;

pub use catalog::ProductCatalog;
pub use customers::{CustomerAccepted, Customers};
pub use error::CommandError;
pub use service::{Current, OrderAccepted, Orders, now_millis, order_exists, transition};

/// The command side's tables (`commands` schema).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
