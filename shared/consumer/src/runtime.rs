//! The consumer loop.
//!
//! `select!` over the shutdown token and the consumer; after the first
//! message, take whatever else is already fetched (up to `max_batch`) without
//! waiting, so batches are large under a backlog and single events when idle.
//! Each partition's batch is applied in one transaction with its offset.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use futures::{FutureExt, StreamExt};
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{
        BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol, StreamConsumer,
    },
    error::KafkaError,
    message::{BorrowedMessage, OwnedMessage},
    types::RDKafkaRespErr,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    ConsumerSettings, DecodeError, Envelope, Handler,
    dead_letter::DeadLetters,
    failure::{self, Failure},
    offsets,
};

/// Consumes topics with a [`Handler`].
pub struct Consumer<H: Handler> {
    pool: PgPool,
    handler: Arc<H>,
    settings: ConsumerSettings,
    consumer: StreamConsumer<SeekToStoredOffsets>,
    dead_letters: Option<DeadLetters>,
}

impl<H: Handler> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.handler.name())
            .finish_non_exhaustive()
    }
}

/// What a consumer did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// Events applied.
    pub applied: usize,
    /// Messages skipped because they were applied before (offset already stored).
    pub already_applied: usize,
    /// Messages sent to the dead-letter topic: undecodable, or refused by the handler.
    pub dead_lettered: usize,
}

impl std::ops::AddAssign for Batch {
    fn add_assign(&mut self, other: Self) {
        self.applied += other.applied;
        self.already_applied += other.already_applied;
        self.dead_lettered += other.dead_lettered;
    }
}

/// Where a consumer reads and where its dead letters go.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// Its group consumer (see `KafkaSettings::consumer_config`).
    pub consumer: ClientConfig,
    /// The producer of its dead letters (see `KafkaSettings::producer_config`).
    pub producer: ClientConfig,
    /// Its dead-letter topic, `<group>.dlq` by convention; `None` logs and
    /// counts poison pills without keeping them (a rebuild replaying
    /// messages the live consumer already dead-lettered).
    pub dead_letter_topic: Option<String>,
}

impl<H: Handler> Consumer<H> {
    /// A consumer of `topics` with `consumer_config` (see
    /// `KafkaSettings::consumer_config`). Must run on a multi-thread Tokio
    /// runtime: assignments read stored offsets synchronously.
    pub fn new(
        pool: PgPool,
        handler: H,
        wiring: &Wiring,
        settings: ConsumerSettings,
    ) -> anyhow::Result<Self> {
        let context = SeekToStoredOffsets {
            pool: pool.clone(),
            name: handler.name().to_owned(),
            runtime: tokio::runtime::Handle::current(),
        };
        let consumer: StreamConsumer<SeekToStoredOffsets> = wiring
            .consumer
            .create_with_context(context)
            .context("creating a Kafka consumer")?;
        let topics: Vec<&str> = wiring.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).context("subscribing")?;
        let group = wiring
            .consumer
            .get("group.id")
            .unwrap_or_default()
            .to_owned();
        let dead_letters = wiring
            .dead_letter_topic
            .as_ref()
            .map(|topic| DeadLetters::new(&wiring.producer, topic.clone(), group))
            .transpose()?;
        Ok(Self {
            pool,
            handler: Arc::new(handler),
            settings,
            consumer,
            dead_letters,
        })
    }

    /// Applies events until `token` is cancelled, then drains what was
    /// fetched within `drain_timeout`, commits and leaves the group.
    /// Returns what it did over its whole run.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<Batch> {
        let mut total = Batch::default();
        loop {
            let first = tokio::select! {
                () = token.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            let mut fetched = Fetched::default();
            fetched.push(first);
            // Take what is already fetched, up to `partition_concurrency`
            // batches' worth: librdkafka hands out one partition's messages
            // after another, so stopping at one full batch would leave the
            // other partitions' messages for the next round.
            let most = self.settings.max_batch * self.settings.partition_concurrency.max(1);
            while fetched.count < most {
                match self.consumer.recv().now_or_never() {
                    Some(message) => fetched.push(message),
                    None => break,
                }
            }
            let apply = self.apply_fetched(fetched.by_partition, &token);
            // Once shutdown begins, what was fetched gets `drain_timeout` to land.
            total += tokio::select! {
                batch = apply => batch?,
                () = async {
                    token.cancelled().await;
                    tokio::time::sleep(self.settings.drain_timeout).await;
                } => {
                    tracing::warn!("drain deadline passed; the unfinished batch will be re-read");
                    break;
                }
            };
        }
        tracing::info!(
            consumer = self.handler.name(),
            applied = total.applied,
            dead_lettered = total.dead_lettered,
            "consumer stopping"
        );
        self.consumer.unsubscribe();
        Ok(total)
    }

    /// Applies each partition's messages, partitions concurrently (up to
    /// `partition_concurrency`), each partition in offset order; then
    /// mirrors the offsets into Kafka.
    async fn apply_fetched(
        &self,
        fetched: BTreeMap<(String, i32), Vec<OwnedMessage>>,
        token: &CancellationToken,
    ) -> anyhow::Result<Batch> {
        let mut committed = TopicPartitionList::new();
        for ((topic, partition), messages) in &fetched {
            if let Some(last) = messages.last() {
                committed.add_partition_offset(
                    topic,
                    *partition,
                    Offset::Offset(last.offset() + 1),
                )?;
            }
        }
        // Futures collected first: a closure inside the stream would not be
        // general enough over lifetimes for a `Send` task.
        let work: Vec<_> = fetched
            .iter()
            .map(|((topic, partition), messages)| async move {
                // A partition's messages, `max_batch` per transaction, in order.
                let mut done = Batch::default();
                for chunk in messages.chunks(self.settings.max_batch.max(1)) {
                    done += self
                        .apply_with_retries(topic, *partition, chunk, token)
                        .await?;
                }
                anyhow::Ok(done)
            })
            .collect();
        let batches: Vec<anyhow::Result<Batch>> = futures::stream::iter(work)
            .buffer_unordered(self.settings.partition_concurrency.max(1))
            .collect()
            .await;
        let mut total = Batch::default();
        for batch in batches {
            total += batch?;
        }
        // Mirror the stored offsets into Kafka for lag tools; correctness does not depend on it.
        if let Err(error) = self.consumer.commit(&committed, CommitMode::Async) {
            tracing::debug!(error = %error, "offset commit to Kafka failed");
        }
        Ok(total)
    }

    /// Applies a partition's messages, retrying transient failures in
    /// place (keeping order) until they succeed or shutdown begins.
    async fn apply_with_retries(
        &self,
        topic: &str,
        partition: i32,
        messages: &[OwnedMessage],
        token: &CancellationToken,
    ) -> anyhow::Result<Batch> {
        let name = self.handler.name();
        let mut backoff = self.settings.retry_backoff;
        loop {
            let error = match self.apply_partition(topic, partition, messages).await {
                Ok(batch) => return Ok(batch),
                Err(error) => error,
            };
            match failure::classify(&error) {
                Failure::Fatal => {
                    return Err(error.context(format!(
                        "{name}: a fatal error on {topic} partition {partition}"
                    )));
                }
                Failure::BadInput | Failure::Transient if !token.is_cancelled() => {
                    tracing::warn!(%topic, partition, error = format!("{error:#}"), ?backoff, "batch failed; retrying");
                    metrics::counter!("tributary_consumer_retries_total", "consumer" => name.to_owned())
                        .increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Failure::BadInput | Failure::Transient => return Err(error),
            }
        }
    }

    /// One unit of work: decode a partition's messages and apply them with
    /// their offset in one transaction. Undecodable messages are
    /// dead-lettered; when the handler refuses the batch as bad input, the
    /// batch is applied again one event at a time to find the culprits.
    async fn apply_partition(
        &self,
        topic: &str,
        partition: i32,
        messages: &[OwnedMessage],
    ) -> anyhow::Result<Batch> {
        match self.apply_messages(topic, partition, messages, false).await {
            Err(error) if failure::classify(&error) == Failure::BadInput => {
                tracing::info!(%topic, partition, error = format!("{error:#}"), "the batch holds bad input; applying it event by event");
                self.apply_messages(topic, partition, messages, true).await
            }
            result => result,
        }
    }

    /// Decodes every message; undecodable ones become dead letters.
    async fn decode_all<'m>(
        &self,
        messages: &'m [OwnedMessage],
        dead: &mut Vec<(&'m OwnedMessage, String)>,
    ) -> anyhow::Result<Vec<(&'m OwnedMessage, Option<H::Event>)>> {
        let mut decoded = Vec::with_capacity(messages.len());
        for message in messages {
            match self.handler.decode(message).await {
                Ok(event) => decoded.push((message, event)),
                Err(DecodeError::BadInput(reason)) => dead.push((message, reason)),
                Err(error @ DecodeError::Unavailable(_)) => return Err(error.into()),
            }
        }
        Ok(decoded)
    }

    /// Decodes the messages and applies what was not applied before, with
    /// the partition's offset, in one transaction; dead letters are
    /// produced before it commits. `one_by_one` applies each event in a
    /// savepoint and dead-letters those refused as bad input.
    async fn apply_messages(
        &self,
        topic: &str,
        partition: i32,
        messages: &[OwnedMessage],
        one_by_one: bool,
    ) -> anyhow::Result<Batch> {
        let name = self.handler.name();
        let Some(last) = messages.last() else {
            return Ok(Batch::default());
        };
        let mut dead = Vec::new();
        let decoded = self.decode_all(messages, &mut dead).await?;
        let mut batch = Batch::default();
        let mut tx = self.pool.begin().await?;
        let next = offsets::lock(&mut tx, name, topic, partition).await?;
        if messages[0].offset() > next {
            tracing::warn!(%topic, partition, stored = next, first = messages[0].offset(), "offsets skipped ahead of the stored offset");
        }
        dead.retain(|(message, _)| message.offset() >= next);
        let mut events = Vec::with_capacity(decoded.len());
        for (message, event) in decoded {
            if message.offset() < next {
                batch.already_applied += 1;
            } else if let Some(event) = event {
                let at = self.handler.occurred_at(&event);
                let envelope = Envelope {
                    topic: topic.to_owned(),
                    partition,
                    offset: message.offset(),
                    event,
                };
                events.push((message, at, envelope));
            }
        }
        let mut last_event_at = None;
        if !one_by_one {
            last_event_at = events.iter().filter_map(|(_, at, _)| *at).max();
            batch.applied = events.len();
            if !events.is_empty() {
                let events = events.into_iter().map(|(_, _, e)| e).collect();
                self.handler.apply(&mut tx, events).await?;
            }
        } else {
            for (message, at, envelope) in events {
                let mut savepoint = sqlx::Acquire::begin(&mut *tx).await?;
                match self.handler.apply(&mut savepoint, vec![envelope]).await {
                    Ok(()) => {
                        savepoint.commit().await?;
                        batch.applied += 1;
                        last_event_at = last_event_at.max(at);
                    }
                    Err(error) if failure::classify(&error) == Failure::BadInput => {
                        savepoint.rollback().await?;
                        dead.push((message, format!("{error:#}")));
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        let next_offset = next.max(last.offset() + 1);
        offsets::advance(&mut tx, name, topic, partition, next_offset, last_event_at).await?;
        dead.sort_by_key(|(message, _)| message.offset());
        batch.dead_lettered = self.send_dead_letters(&dead).await?;
        tx.commit().await?;
        metrics::counter!("tributary_consumer_applied_total", "consumer" => name.to_owned())
            .increment(batch.applied as u64);
        Ok(batch)
    }

    /// Produces the dead letters and waits until the broker has them all.
    async fn send_dead_letters(&self, dead: &[(&OwnedMessage, String)]) -> anyhow::Result<usize> {
        let name = self.handler.name();
        let to = self.dead_letters.as_ref().map(DeadLetters::topic);
        for (message, error) in dead {
            tracing::warn!(
                consumer = name, topic = message.topic(), partition = message.partition(),
                offset = message.offset(), %error, dead_letters = to.unwrap_or("(none: skipped)"),
                "dead-lettering a message"
            );
        }
        if let Some(dead_letters) = &self.dead_letters {
            futures::future::try_join_all(
                dead.iter()
                    .map(|(message, error)| dead_letters.send(message, error)),
            )
            .await?;
        }
        if !dead.is_empty() {
            metrics::counter!("tributary_consumer_dead_letters_total", "consumer" => name.to_owned())
                .increment(dead.len() as u64);
        }
        Ok(dead.len())
    }
}

/// Messages fetched for one batch, by topic and partition, in offset order.
#[derive(Default)]
struct Fetched {
    by_partition: BTreeMap<(String, i32), Vec<OwnedMessage>>,
    count: usize,
}

impl Fetched {
    fn push(&mut self, message: Result<BorrowedMessage<'_>, KafkaError>) {
        match message {
            Ok(message) => {
                self.by_partition
                    .entry((message.topic().to_owned(), message.partition()))
                    .or_default()
                    .push(message.detach());
                self.count += 1;
            }
            Err(error) => tracing::warn!(error = %error, "consumer error"),
        }
    }
}

/// On every assignment, start each partition at the offset stored beside the
/// consumer's work (or at the beginning for a partition never applied).
struct SeekToStoredOffsets {
    pool: PgPool,
    name: String,
    runtime: tokio::runtime::Handle,
}

impl ClientContext for SeekToStoredOffsets {}

impl ConsumerContext for SeekToStoredOffsets {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = tokio::task::block_in_place(|| {
                    self.runtime.block_on(offsets::load(&self.pool, &self.name))
                });
                match stored {
                    Ok(stored) => {
                        let assigned: Vec<(String, i32)> = tpl
                            .elements()
                            .iter()
                            .map(|e| (e.topic().to_owned(), e.partition()))
                            .collect();
                        for (topic, partition) in assigned {
                            let offset = stored
                                .get(&(topic.clone(), partition))
                                .map_or(Offset::Beginning, |n| Offset::Offset(*n));
                            if let Err(error) = tpl.set_partition_offset(&topic, partition, offset)
                            {
                                tracing::error!(error = %error, partition, "cannot set the start offset");
                            }
                        }
                    }
                    // The batch transaction still skips what was applied; Kafka's
                    // committed offsets never run ahead of the stored ones.
                    Err(error) => {
                        tracing::error!(error = %error, "cannot read stored offsets; resuming from Kafka's")
                    }
                }
                tracing::info!(consumer = %self.name, partitions = ?partitions(tpl), "partitions assigned");
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(consumer = %self.name, partitions = ?partitions(tpl), "partitions revoked");
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::error!(error = %error, "applying the rebalance failed");
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32, Offset)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
        .collect()
}
