//! Kafka client set-up: one place that turns settings into rdkafka configs,
//! creates topics, and starts librdkafka's in-process mock cluster for the
//! zero-setup demo.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    mocking::MockCluster,
    types::RDKafkaErrorCode,
};
use serde::{Deserialize, Serialize};

use crate::Secret;

/// Settings shared by every Kafka client of a role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated (`KAFKA_BROKERS` sets it too).
    /// Unset: `demo` and `run all` start librdkafka's in-process mock cluster.
    pub brokers: Option<String>,
    /// Prepended to every topic name, so several deployments (or tests) can share a cluster.
    pub topic_prefix: String,
    /// Partitions of the topics Tributary creates.
    pub partitions: i32,
    /// Replication factor of the topics Tributary creates.
    pub replication_factor: i32,
    /// Consumer group session timeout. Shutdown drains within a deadline shorter than this.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Longest a consumer's fetch waits for data (`fetch.wait.max.ms`). It bounds
    /// latency on brokers that do not answer a waiting fetch as soon as data
    /// arrives (tansu); on Kafka it only sets how often an idle consumer asks.
    #[serde(with = "humantime_serde")]
    pub fetch_wait_max: Duration,
    /// Extra librdkafka properties for every client, e.g. `security.protocol`,
    /// `ssl.ca.location`, `sasl.mechanisms`, `sasl.username`.
    pub properties: BTreeMap<String, String>,
    /// SASL password (`TRIBUTARY__KAFKA__SASL_PASSWORD`). Prints as `***`.
    pub sasl_password: Option<Secret>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: None,
            topic_prefix: String::new(),
            partitions: 6,
            replication_factor: 1,
            session_timeout: Duration::from_secs(10),
            fetch_wait_max: Duration::from_millis(50),
            properties: BTreeMap::new(),
            sasl_password: None,
        }
    }
}

impl KafkaSettings {
    /// The deployed name of a contract topic.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// Settings every client shares: brokers, security, extra properties.
    pub fn client_config(&self, brokers: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        if let Some(password) = &self.sasl_password {
            config.set("sasl.password", password.expose());
        }
        config
    }

    /// A producer that never loses or reorders: idempotent, `acks=all`.
    pub fn producer_config(&self, brokers: &str, client_id: &str) -> ClientConfig {
        let mut config = self.client_config(brokers);
        config
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        config
    }

    /// A group consumer that commits nothing on its own: the caller decides
    /// where offsets are stored. Cooperative-sticky assignment.
    pub fn consumer_config(&self, brokers: &str, group_id: &str) -> ClientConfig {
        let mut config = self.client_config(brokers);
        config
            .set("group.id", group_id)
            .set("client.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.session_timeout.as_millis() / 5).to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait_max.as_millis().to_string(),
            )
            // A subscribed topic created after the consumer joined (or not yet
            // in the broker's metadata when it did) is picked up within
            // seconds, not librdkafka's default five minutes.
            .set("topic.metadata.refresh.interval.ms", "5000");
        config
    }
}

/// Where the brokers are: an external cluster, or librdkafka's mock cluster
/// running in this process (demo only: it keeps ~5 MiB per partition).
#[derive(Debug)]
pub struct Cluster {
    bootstrap_servers: String,
    mock: Option<MockOwner>,
}

/// The mock cluster is neither `Send` nor `Sync`, so one thread owns it and
/// creates topics on request; dropping the handle stops the thread and the mock.
#[derive(Debug)]
struct MockOwner {
    requests: std::sync::mpsc::Sender<CreateTopic>,
}

type CreateTopic = (
    String,
    i32,
    tokio::sync::oneshot::Sender<rdkafka::error::KafkaResult<()>>,
);

impl MockOwner {
    fn start() -> anyhow::Result<(Self, String)> {
        let (requests, inbox) = std::sync::mpsc::channel::<CreateTopic>();
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kafka-mock".into())
            .spawn(move || {
                let mock = match MockCluster::new(1) {
                    Ok(mock) => mock,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                let _ = ready.send(Ok(mock.bootstrap_servers()));
                for (name, partitions, reply) in inbox {
                    let _ = reply.send(mock.create_topic(&name, partitions, 1));
                }
            })
            .context("starting the mock cluster's thread")?;
        let bootstrap = started
            .recv()
            .context("the mock cluster's thread stopped")?
            .context("starting the in-process mock Kafka cluster")?;
        Ok((Self { requests }, bootstrap))
    }

    async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send((name.to_owned(), partitions, reply))
            .map_err(|_| anyhow::anyhow!("the mock cluster stopped"))?;
        match answer.await.context("the mock cluster stopped")? {
            Ok(()) => Ok(()),
            Err(error)
                if error.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAlreadyExists) =>
            {
                Ok(())
            }
            Err(error) => {
                Err(error).with_context(|| format!("creating topic {name} on the mock cluster"))
            }
        }
    }
}

impl Cluster {
    /// The configured brokers, or a new mock cluster when none are configured
    /// and `allow_mock` is set.
    pub fn connect(settings: &KafkaSettings, allow_mock: bool) -> anyhow::Result<Self> {
        match &settings.brokers {
            Some(brokers) if !brokers.trim().is_empty() => Ok(Self {
                bootstrap_servers: brokers.clone(),
                mock: None,
            }),
            _ if allow_mock => {
                let (mock, bootstrap_servers) = MockOwner::start()?;
                Ok(Self {
                    bootstrap_servers,
                    mock: Some(mock),
                })
            }
            _ => bail!(
                "kafka.brokers is not set (KAFKA_BROKERS): a mock cluster lives inside one \
                 process, so only `demo` and `run all` can start without brokers"
            ),
        }
    }

    /// The bootstrap servers to give clients.
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap_servers.clone()
    }

    /// Whether this is the in-process mock cluster.
    pub fn is_mock(&self) -> bool {
        self.mock.is_some()
    }

    /// Creates the topics that do not exist yet. Existing topics are left as they are.
    pub async fn ensure_topics(
        &self,
        settings: &KafkaSettings,
        names: &[String],
    ) -> anyhow::Result<()> {
        if let Some(mock) = &self.mock {
            for name in names {
                mock.create_topic(name, settings.partitions).await?;
            }
            return Ok(());
        }
        let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(
            settings
                .client_config(&self.bootstrap_servers)
                .create()
                .context("creating a Kafka admin client")?,
        );
        // Only what is missing is created: a role may start without the
        // right to create topics, and a cluster that cannot create them over
        // the protocol (another process's mock) is left alone.
        let existing: HashSet<String> = {
            let admin = Arc::clone(&admin);
            tokio::task::spawn_blocking(move || {
                admin
                    .inner()
                    .fetch_metadata(None, Duration::from_secs(10))
                    .map(|metadata| {
                        metadata
                            .topics()
                            .iter()
                            .map(|topic| topic.name().to_owned())
                            .collect()
                    })
            })
            .await
            .context("the cluster's metadata lookup panicked")?
            .context("reading the cluster's topics")?
        };
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .filter(|name| !existing.contains(name.as_str()))
            .map(|name| {
                NewTopic::new(
                    name,
                    settings.partitions,
                    TopicReplication::Fixed(settings.replication_factor),
                )
            })
            .collect();
        if topics.is_empty() {
            return Ok(());
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&topics, &options)
            .await
            .with_context(|| {
                let missing: Vec<&str> = topics.iter().map(|topic| topic.name).collect();
                format!("creating topics {}", missing.join(", "))
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => bail!("creating topic {topic}: {code}"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> KafkaSettings {
        KafkaSettings {
            topic_prefix: "staging.".into(),
            properties: BTreeMap::from([("security.protocol".into(), "SASL_SSL".into())]),
            sasl_password: Some(Secret::new("s3cret")),
            ..KafkaSettings::default()
        }
    }

    #[test]
    fn producers_are_idempotent_with_acks_from_every_replica() {
        let config = settings().producer_config("k:9092", "relay");
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("bootstrap.servers"), Some("k:9092"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
    }

    #[test]
    fn consumers_store_no_offsets_on_their_own_and_bound_fetch_waits() {
        let config = settings().consumer_config("k:9092", "projector");
        assert_eq!(config.get("group.id"), Some("projector"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(
            config.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(config.get("session.timeout.ms"), Some("10000"));
        assert_eq!(config.get("fetch.wait.max.ms"), Some("50"));
    }

    #[test]
    fn topics_carry_the_deployment_prefix() {
        assert_eq!(
            settings().topic("shop.orders.events"),
            "staging.shop.orders.events"
        );
    }

    #[test]
    fn single_roles_refuse_to_start_without_brokers() {
        let error = Cluster::connect(&KafkaSettings::default(), false).unwrap_err();
        assert!(
            error.to_string().contains("kafka.brokers is not set"),
            "{error}"
        );
        let cluster = Cluster::connect(&settings_with_brokers(), false).unwrap();
        assert_eq!(cluster.bootstrap_servers(), "k:9092");
        assert!(!cluster.is_mock());
    }

    fn settings_with_brokers() -> KafkaSettings {
        KafkaSettings {
            brokers: Some("k:9092".into()),
            ..KafkaSettings::default()
        }
    }

    /// A role on another process's mock cluster (whose CreateTopics times
    /// out) starts when its topics are there: nothing existing is created.
    #[tokio::test]
    async fn existing_topics_are_not_created_again() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("tasks.default", 2, 1).unwrap();
        let settings = KafkaSettings {
            brokers: Some(mock.bootstrap_servers()),
            ..KafkaSettings::default()
        };
        let cluster = Cluster::connect(&settings, false).unwrap();
        cluster
            .ensure_topics(&settings, &["tasks.default".to_owned()])
            .await
            .expect("no CreateTopics for a topic that exists");
    }
}
