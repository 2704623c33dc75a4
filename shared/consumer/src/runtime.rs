//! The consumer loop.
//!
//! One loop fetches and hands each message to its partition's worker; a
//! worker takes whatever its queue already holds (up to `max_batch`)
//! without waiting, so batches are large under a backlog and single events
//! when idle. Each batch is applied in one transaction with its offset;
//! partitions proceed concurrently and independently.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{
        BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol, StreamConsumer,
    },
    message::OwnedMessage,
    types::RDKafkaRespErr,
};
use sqlx::PgPool;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};
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
    ///
    /// The loop hands each message to its partition's worker through a
    /// bounded queue; a worker takes what its queue holds (up to
    /// `max_batch`) as one batch. Workers apply concurrently, at most
    /// `partition_concurrency` at once, and never wait for each other.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<Batch> {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.settings.partition_concurrency.max(1)));
        let mut queues: HashMap<(String, i32), mpsc::Sender<OwnedMessage>> = HashMap::new();
        let mut workers: JoinSet<anyhow::Result<Batch>> = JoinSet::new();
        let mut total = Batch::default();
        loop {
            let message = tokio::select! {
                () = token.cancelled() => break,
                // Workers end early only on a fatal error or a panic.
                Some(ended) = workers.join_next(), if !workers.is_empty() => {
                    total += finished(ended)?;
                    continue;
                }
                message = this.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message.detach(),
                Err(error) => {
                    tracing::warn!(error = %error, "consumer error");
                    continue;
                }
            };
            let key = (message.topic().to_owned(), message.partition());
            let queue = queues.entry(key).or_insert_with_key(|(topic, partition)| {
                let (sender, receiver) = mpsc::channel(this.settings.max_batch.max(1) * 2);
                workers.spawn(Arc::clone(&this).work(
                    topic.clone(),
                    *partition,
                    receiver,
                    Arc::clone(&permits),
                    token.clone(),
                ));
                sender
            });
            // A full queue holds the loop (backpressure) until shutdown.
            tokio::select! {
                () = token.cancelled() => break,
                sent = queue.send(message) => if sent.is_err() {
                    tracing::debug!("a partition worker has stopped");
                },
            }
        }
        // Stop fetching; workers apply what they hold within the deadline.
        drop(queues);
        let drained = tokio::time::timeout(this.settings.drain_timeout, async {
            let mut drained = Batch::default();
            while let Some(ended) = workers.join_next().await {
                drained += finished(ended)?;
            }
            anyhow::Ok(drained)
        })
        .await;
        match drained {
            Ok(drained) => total += drained?,
            Err(_) => {
                tracing::warn!("drain deadline passed; unfinished batches will be re-read");
                workers.abort_all();
            }
        }
        tracing::info!(
            consumer = this.handler.name(),
            applied = total.applied,
            dead_lettered = total.dead_lettered,
            "consumer stopping"
        );
        this.consumer.unsubscribe();
        Ok(total)
    }

    /// A partition's worker: batches of what its queue holds, applied in
    /// order, each followed by mirroring its offset into Kafka.
    async fn work(
        self: Arc<Self>,
        topic: String,
        partition: i32,
        mut queue: mpsc::Receiver<OwnedMessage>,
        permits: Arc<Semaphore>,
        token: CancellationToken,
    ) -> anyhow::Result<Batch> {
        let max_batch = self.settings.max_batch.max(1);
        let mut total = Batch::default();
        let mut batch = Vec::with_capacity(max_batch);
        while let Some(first) = queue.recv().await {
            batch.push(first);
            while batch.len() < max_batch {
                match queue.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            let permit = permits.acquire().await?;
            total += self
                .apply_with_retries(&topic, partition, &batch, &token)
                .await?;
            drop(permit);
            let next = batch.last().map_or(0, |m| m.offset() + 1);
            let mut committed = TopicPartitionList::new();
            committed.add_partition_offset(&topic, partition, Offset::Offset(next))?;
            // Mirrored for lag tools; correctness does not depend on it.
            if let Err(error) = self.consumer.commit(&committed, CommitMode::Async) {
                tracing::debug!(error = %error, "offset commit to Kafka failed");
            }
            batch.clear();
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

/// What a worker returned: its totals, its error, or its panic (resumed).
fn finished(ended: Result<anyhow::Result<Batch>, tokio::task::JoinError>) -> anyhow::Result<Batch> {
    match ended {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(error.into()),
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
