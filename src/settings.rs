//! The settings of every role, as one document.
//!
//! Loaded by [`tributary_platform::config::load`]: built-in defaults, then an
//! optional TOML file (`--config`), then `DATABASE_URL`/`KAFKA_BROKERS`, then
//! `TRIBUTARY__SECTION__KEY` variables. Unknown keys are refused.

use serde::{Deserialize, Serialize};
use tributary_api::CommandApiSettings;
use tributary_consumer::ConsumerSettings;
use tributary_notifier::NotifierSettings;
use tributary_platform::{
    auth::AuthSettings, db::DatabaseSettings, kafka::KafkaSettings, telemetry::TelemetrySettings,
};
use tributary_query::QuerySettings;
use tributary_registry::RegistrySettings;
use tributary_relay::RelaySettings;
use tributary_tasks::TaskSettings;

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
    /// Bearer tokens and their scopes, for every HTTP surface (the registry too).
    pub auth: AuthSettings,
    /// The schema registry: where it listens, where clients find it and the
    /// token they send.
    pub registry: RegistrySettings,
    /// The command API.
    pub api: CommandApiSettings,
    /// The outbox relay.
    pub relay: RelaySettings,
    /// The projector (consumer group `tributary-projector` unless set).
    pub projector: ConsumerSettings,
    /// The process manager (consumer group `tributary-process-manager` unless set).
    pub process_manager: ConsumerSettings,
    /// The query API.
    pub query: QuerySettings,
    /// The task worker and enqueueing.
    pub tasks: TaskSettings,
    /// The notifier: webhooks and e-mails.
    pub notifier: NotifierSettings,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_example_file_loads_and_states_every_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tributary.example.toml");
        let loaded: Settings =
            tributary_platform::config::load(Some(path.as_ref()), &HashMap::new())
                .expect("the example configuration loads");
        let mut defaults = Settings::default();
        defaults.kafka.brokers = Some("127.0.0.1:9092".into());
        assert_eq!(
            serde_json::to_value(&loaded).unwrap(),
            serde_json::to_value(&defaults).unwrap(),
            "deploy/tributary.example.toml no longer matches the built-in defaults"
        );
    }
}
