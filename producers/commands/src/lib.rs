//! The command API: HTTP commands are validated against the order aggregate,
//! and the aggregate's new state and its events are written in one PostgreSQL
//! transaction (the transactional outbox). The relay publishes them later.
//!
//! ```text
//! POST /orders              PlaceOrder   → 201, OrderPlaced in the outbox
//! POST /orders/{id}/cancel  CancelOrder  → 200, OrderCancelled in the outbox
//! ```

mod api;
pub mod domain;
pub mod outbox;
mod service;
mod settings;

pub use api::{AppState, router};
pub use service::{CommandError, OrderAccepted, Orders};
pub use settings::CommandApiSettings;

/// The command side's tables (`commands` schema).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
