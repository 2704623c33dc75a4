//! Dead letters, in one place: the dead-letter topic of a consumer group
//! (`<group>.dlq`), the headers its letters carry, and the operators' tools
//! over them ([`DeadLetterAdmin`]: list, show, redrive, `consumer.redrives`).
//!
//! A message that cannot be decoded or applied is produced there as it was
//! (key, value, headers) with headers saying where it came from and why:
//! `original_topic`, `original_partition`, `original_offset`, `error`,
//! `schema_id` (when the value carries one), `consumer_group` and
//! `dead_lettered_at`. Deliveries are awaited before the batch's offsets
//! commit, so a dead letter is never lost; a crash between the two can
//! repeat one (the original offset tells the copies apart).

mod inspect;
mod letter;
mod redrive;
mod scan;

use std::time::Duration;

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use rdkafka::{
    ClientConfig, Message,
    message::{Header, Headers, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
};
use tributary_schemas::framing;

pub use inspect::{Listed, Shown};
pub use letter::{DlqId, Filter, Group, select_groups};
pub use redrive::{Redrive, RedriveProgress, RedriveSummary, Redriven};

/// How many times a message has been redriven (a header a redrive sets).
pub const REDRIVE_COUNT: &str = "redrive_count";
/// The id of the dead letter a message was redriven from (a header a redrive sets).
pub const REDRIVEN_FROM: &str = "redriven_from";

/// Headers the dead-letter topic sets; copies of them on the original are replaced.
pub const HEADERS: [&str; 7] = [
    "original_topic",
    "original_partition",
    "original_offset",
    "error",
    "schema_id",
    "consumer_group",
    "dead_lettered_at",
];

/// The headers a dead letter of `group` carries besides the original's:
/// where the original was read (`origin`: topic, partition, offset), why it
/// was dead-lettered, its value's writer schema id (when it had one), the
/// group, and when.
pub fn ours(
    origin: (&str, i32, i64),
    error: &str,
    schema_id: Option<u32>,
    group: &str,
) -> Vec<(&'static str, String)> {
    let (topic, partition, offset) = origin;
    let mut headers = vec![
        ("original_topic", topic.to_owned()),
        ("original_partition", partition.to_string()),
        ("original_offset", offset.to_string()),
        ("error", error.to_owned()),
    ];
    if let Some(id) = schema_id {
        headers.push(("schema_id", id.to_string()));
    }
    headers.push(("consumer_group", group.to_owned()));
    headers.push((
        "dead_lettered_at",
        Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    ));
    headers
}

/// A dead letter's headers when it is written as text (through the outbox):
/// the original's `headers`, less copies of [`HEADERS`], then [`ours`].
pub fn headers(
    original: &[(String, String)],
    origin: (&str, i32, i64),
    error: &str,
    schema_id: Option<u32>,
    group: &str,
) -> Vec<(String, String)> {
    original
        .iter()
        .filter(|(name, _)| !HEADERS.contains(&name.as_str()))
        .cloned()
        .chain(
            ours(origin, error, schema_id, group)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        )
        .collect()
}

/// Produces a consumer group's dead letters.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    group: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A producer of `group`'s dead letters to `topic`.
    pub fn new(config: &ClientConfig, topic: String, group: String) -> anyhow::Result<Self> {
        let producer = config
            .create()
            .context("creating the dead-letter producer")?;
        Ok(Self {
            producer,
            topic,
            group,
        })
    }

    /// The topic dead letters go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces `message` with `error`, and waits for the broker to have it.
    pub async fn send(&self, message: &OwnedMessage, error: &str) -> anyhow::Result<()> {
        let schema_id = message
            .payload()
            .and_then(|payload| framing::split(payload).ok())
            .map(|(id, _)| id);
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                if !HEADERS.contains(&header.key) {
                    headers = headers.insert(header);
                }
            }
        }
        let origin = (message.topic(), message.partition(), message.offset());
        for (key, value) in ours(origin, error, schema_id, &self.group) {
            headers = headers.insert(Header {
                key,
                value: Some(&value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)
            .with_context(|| format!("producing a dead letter to {}", self.topic))?;
        Ok(())
    }
}

/// The operators' dead-letter tools over one deployment: what `tributary ctl
/// dlq` and an admin HTTP handler call alike.
///
/// Listing reads each group's dead-letter topic from the beginning to its
/// high watermarks with an assigned consumer (no group joined, nothing
/// committed). A redrive produces the original key, value and headers back
/// to the original topic with `redrive_count` (previous + 1) and
/// `redriven_from` (the id), through an idempotent producer at a limited
/// rate, and records it in `consumer.redrives` once the broker acknowledged
/// it. Recorded ids are never redriven again; nor is a dead letter already
/// redriven `max_redrives` times (the loop guard).
#[derive(Debug, Clone)]
pub struct DeadLetterAdmin {
    groups: Vec<Group>,
    kafka: tributary_platform::kafka::KafkaSettings,
    bootstrap_servers: String,
    pool: sqlx::PgPool,
    registry: tributary_registry::RegistryClient,
}

impl DeadLetterAdmin {
    /// The tools over `groups` (the consumer groups the deployment runs),
    /// reaching Kafka at `bootstrap_servers` with `kafka`'s settings,
    /// recording redrives in `pool`, decoding values through `registry`.
    pub fn new(
        groups: Vec<Group>,
        kafka: tributary_platform::kafka::KafkaSettings,
        bootstrap_servers: String,
        pool: sqlx::PgPool,
        registry: tributary_registry::RegistryClient,
    ) -> Self {
        Self {
            groups,
            kafka,
            bootstrap_servers,
            pool,
            registry,
        }
    }

    /// The consumer groups whose dead letters these tools see.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The dead-letter topic of consumer group `group` (deployed name).
    pub fn dead_letters_of(&self, group: &str) -> String {
        self.kafka.topic(&format!("{group}.dlq"))
    }

    /// Lists the dead letters matching `filter`, per group, per partition, in offset order.
    pub async fn list(&self, filter: &Filter) -> anyhow::Result<Vec<Listed>> {
        inspect::list(self, filter).await
    }

    /// Reads the dead letter `id` and decodes its value through the registry.
    pub async fn show(&self, id: &DlqId) -> anyhow::Result<Shown> {
        inspect::show(self, id).await
    }

    /// Redrives a group's dead letters matching the filter; `report` hears
    /// of each one, `progress` about once a second. One redrive per
    /// dead-letter topic runs at a time (a PostgreSQL advisory lock).
    pub async fn redrive(
        &self,
        options: &Redrive,
        report: impl FnMut(&Redriven),
        progress: impl FnMut(&RedriveProgress),
    ) -> anyhow::Result<RedriveSummary> {
        redrive::redrive(self, options, report, progress).await
    }
}
