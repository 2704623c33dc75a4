//! The command API: HTTP commands are validated against the order aggregate,
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

mod api;
pub mod catalog;
mod customers;
pub mod domain;
pub mod idempotency;
pub mod process_manager;
mod service;
mod settings;

pub use api::{AppState, router};
pub use catalog::Catalog;
pub use customers::{CustomerAccepted, Customers};
pub use process_manager::ProcessManager;
pub use service::{CommandError, OrderAccepted, Orders};
pub use settings::CommandApiSettings;

/// The command side's tables (`commands` schema).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
