//! The consumer runtime every consumer role uses.
//!
//! A [`Handler`] says how to decode a message and how to apply a batch of
//! decoded events inside a PostgreSQL transaction; the [`Consumer`] does the
//! rest: adaptive batches per partition, the batch and its offset in one
//! transaction, a seek to the stored offsets on every assignment,
//! cooperative-sticky rebalancing, partitions applied concurrently, failures
//! classified ([`failure`]): bad input to the group's dead-letter topic,
//! transient ones retried in place, fatal ones stopping the role; and a
//! shutdown that drains within a deadline.
//!
//! Effectively-once: each batch locks its partition's offset row, skips what
//! was already applied, applies the rest and advances the offset in one
//! transaction. A crash at any point neither loses nor double-applies an
//! event, and a stale instance that lost its partition cannot apply twice.

pub mod avro;
pub mod dead_letter;
pub mod failure;
pub mod offsets;
mod runtime;

use std::future::Future;

use chrono::{DateTime, Utc};
use rdkafka::message::OwnedMessage;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::time::Duration;

pub use avro::{AvroDecoder, Decoded};
pub use dead_letter::{DeadLetters, HEADERS as DEAD_LETTER_HEADERS};
pub use failure::{BadInput, Failure, Fatal};
pub use offsets::applied;
pub use runtime::{Batch, Consumer, Wiring};

/// The runtime's table (`consumer.offsets`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a message could not become an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The message is bad: it will never decode. It goes to the dead-letter topic.
    #[error("{0}")]
    BadInput(String),
    /// Something the decoder needs is unavailable right now: retry the batch.
    #[error("unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
}

/// A decoded event with where it came from.
#[derive(Debug, Clone)]
pub struct Envelope<E> {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The decoded event.
    pub event: E,
}

/// What a consumer does with its messages.
pub trait Handler: Send + Sync + 'static {
    /// The decoded form of one message.
    type Event: Send + Sync;

    /// The name offsets are stored under (one per consumer, e.g. `orders`).
    fn name(&self) -> &str;

    /// Decodes one message; `Ok(None)` for a message this handler ignores.
    fn decode(
        &self,
        message: &OwnedMessage,
    ) -> impl Future<Output = Result<Option<Self::Event>, DecodeError>> + Send;

    /// When the event happened, for freshness reports.
    fn occurred_at(&self, event: &Self::Event) -> Option<DateTime<Utc>>;

    /// Applies a partition's events, in offset order, inside the batch's transaction.
    fn apply(
        &self,
        conn: &mut PgConnection,
        events: Vec<Envelope<Self::Event>>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Settings of a consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Consumer group (default: `tributary-<role>`).
    pub group_id: Option<String>,
    /// Most messages of one partition applied in one batch (one
    /// transaction). Batches grow up to this while there is a backlog and
    /// shrink to single events when there is none.
    pub max_batch: usize,
    /// How long shutdown may take to apply what was fetched; keep it below
    /// the group session timeout.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// First wait before retrying a batch after a transient failure (doubles up to 30 s).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Partitions applied at once: each partition has a worker, and at most
    /// this many hold a transaction (and a database connection) at a time;
    /// keep it below the pool size.
    pub partition_concurrency: usize,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            group_id: None,
            max_batch: 5000,
            drain_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(200),
            partition_concurrency: 4,
        }
    }
}

impl ConsumerSettings {
    /// The consumer group: the configured one, or `default`.
    pub fn group_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.group_id.as_deref().unwrap_or(default)
    }
}
