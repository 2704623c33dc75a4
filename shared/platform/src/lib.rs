//! What every Tributary role uses: layered configuration, telemetry, the
//! PostgreSQL pool and migrations, Kafka client set-up, HTTP problem
//! responses, and one shutdown coordinator.
//!
//! A role builds its clients from its settings and runs under [`shutdown::Shutdown`]:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use tributary_platform::{config, db::DatabaseSettings};
//!
//! #[derive(serde::Deserialize, Default)]
//! #[serde(default, deny_unknown_fields)]
//! struct Settings {
//!     database: DatabaseSettings,
//! }
//!
//! let settings: Settings = config::load(None, &config::process_env())?;
//! let pool = tributary_platform::db::connect(&settings.database, &[]).await?;
//! # drop(pool); Ok(()) }
//! ```

pub mod auth;
pub mod config;
pub mod db;
pub mod http;
pub mod kafka;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use secret::Secret;
