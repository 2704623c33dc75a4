//! The settings of every role, as one document.
//!
//! Loaded by [`tributary_platform::config::load`]: built-in defaults, then an
//! optional TOML file (`--config`), then `DATABASE_URL`/`KAFKA_BROKERS`, then
//! `TRIBUTARY__SECTION__KEY` variables. Unknown keys are refused.

use serde::{Deserialize, Serialize};
use tributary_commands::CommandApiSettings;
use tributary_platform::{
    db::DatabaseSettings, kafka::KafkaSettings, telemetry::TelemetrySettings,
};
use tributary_projector::ProjectorSettings;
use tributary_query::QuerySettings;
use tributary_registry::RegistrySettings;
use tributary_relay::RelaySettings;

/// Every section of the configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL: write model, outbox, registry, read models.
    pub database: DatabaseSettings,
    /// Kafka brokers, topic prefix, security.
    pub kafka: KafkaSettings,
    /// Logs.
    pub telemetry: TelemetrySettings,
    /// The schema registry: where it listens and where clients find it.
    pub registry: RegistrySettings,
    /// The command API.
    pub api: CommandApiSettings,
    /// The outbox relay.
    pub relay: RelaySettings,
    /// The projector.
    pub projector: ProjectorSettings,
    /// The query API.
    pub query: QuerySettings,
}
