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
            .map(|(id, _)| id.to_string());
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                if !HEADERS.contains(&header.key) {
                    headers = headers.insert(header);
                }
            }
        }
        let ours: [(&str, Option<&str>); 7] = [
            ("original_topic", Some(message.topic())),
            ("original_partition", Some(&partition)),
            ("original_offset", Some(&offset)),
            ("error", Some(error)),
            ("schema_id", schema_id.as_deref()),
            ("consumer_group", Some(&self.group)),
            ("dead_lettered_at", Some(&now)),
        ];
        for (key, value) in ours {
            if let Some(value) = value {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
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
