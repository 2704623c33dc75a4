//! The dead-letter topic of a consumer group (`<group>.dlq`).
//!
//! A message that cannot be decoded or applied is produced there as it was
//! (key, value, headers) with headers saying where it came from and why:
//! `original_topic`, `original_partition`, `original_offset`, `error`,
//! `schema_id` (when the value carries one), `consumer_group` and
//! `dead_lettered_at`. Deliveries are awaited before the batch's offsets
//! commit, so a dead letter is never lost; a crash between the two can
//! repeat one (the original offset tells the copies apart).

use std::time::Duration;

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use rdkafka::{
    ClientConfig, Message,
    message::{Header, Headers, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
};
use tributary_schemas::framing;

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
