//! The consumer loop.
//!
//! `select!` over the shutdown token and the consumer; after the first
//! message, take whatever else is already fetched (up to `max_batch`) without
//! waiting, so batches are large under a backlog and single events when idle.
//! Each partition's batch is applied in one transaction with its offset.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use futures::FutureExt;
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

use crate::{ConsumerSettings, DecodeError, Envelope, Handler, offsets};

/// Consumes topics with a [`Handler`].
pub struct Consumer<H: Handler> {
    pool: PgPool,
    handler: Arc<H>,
    settings: ConsumerSettings,
    consumer: StreamConsumer<SeekToStoredOffsets>,
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
    /// Messages that could not be decoded, logged and skipped.
    pub undecodable: usize,
}

impl std::ops::AddAssign for Batch {
    fn add_assign(&mut self, other: Self) {
        self.applied += other.applied;
        self.already_applied += other.already_applied;
        self.undecodable += other.undecodable;
    }
}

impl<H: Handler> Consumer<H> {
    /// A consumer of `topics` with `consumer_config` (see
    /// `KafkaSettings::consumer_config`). Must run on a multi-thread Tokio
    /// runtime: assignments read stored offsets synchronously.
    pub fn new(
        pool: PgPool,
        handler: H,
        topics: &[String],
        consumer_config: &ClientConfig,
        settings: ConsumerSettings,
    ) -> anyhow::Result<Self> {
        let context = SeekToStoredOffsets {
            pool: pool.clone(),
            name: handler.name().to_owned(),
            runtime: tokio::runtime::Handle::current(),
        };
        let consumer: StreamConsumer<SeekToStoredOffsets> = consumer_config
            .create_with_context(context)
            .context("creating a Kafka consumer")?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).context("subscribing")?;
        Ok(Self {
            pool,
            handler: Arc::new(handler),
            settings,
            consumer,
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
            while fetched.count < self.settings.max_batch {
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
            undecodable = total.undecodable,
            "consumer stopping"
        );
        self.consumer.unsubscribe();
        Ok(total)
    }

    async fn apply_fetched(
        &self,
        fetched: BTreeMap<(String, i32), Vec<OwnedMessage>>,
        token: &CancellationToken,
    ) -> anyhow::Result<Batch> {
        let mut total = Batch::default();
        let mut committed = TopicPartitionList::new();
        for ((topic, partition), messages) in fetched {
            let mut backoff = self.settings.retry_backoff;
            let batch = loop {
                match self.apply_partition(&topic, partition, &messages).await {
                    Ok(batch) => break batch,
                    Err(error) if !token.is_cancelled() => {
                        // Transient (database, registry): retry in place, keeping order.
                        tracing::warn!(%topic, partition, error = format!("{error:#}"), ?backoff, "batch failed; retrying");
                        metrics::counter!("tributary_consumer_retries_total", "consumer" => self.handler.name().to_owned())
                            .increment(1);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                    Err(error) => return Err(error),
                }
            };
            total += batch;
            if let Some(last) = messages.last() {
                committed.add_partition_offset(
                    &topic,
                    partition,
                    Offset::Offset(last.offset() + 1),
                )?;
            }
        }
        // Mirror the stored offsets into Kafka for lag tools; correctness does not depend on it.
        if let Err(error) = self.consumer.commit(&committed, CommitMode::Async) {
            tracing::debug!(error = %error, "offset commit to Kafka failed");
        }
        Ok(total)
    }

    /// One unit of work: decode a partition's messages and apply them with
    /// their offset in one transaction.
    async fn apply_partition(
        &self,
        topic: &str,
        partition: i32,
        messages: &[OwnedMessage],
    ) -> anyhow::Result<Batch> {
        let name = self.handler.name();
        let mut batch = Batch::default();
        let mut decoded = Vec::with_capacity(messages.len());
        for message in messages {
            match self.handler.decode(message).await {
                Ok(event) => decoded.push((message.offset(), event)),
                Err(DecodeError::BadInput(reason)) => {
                    tracing::warn!(
                        consumer = name, %topic, partition, offset = message.offset(), error = %reason,
                        "skipping a message that cannot be decoded"
                    );
                    metrics::counter!("tributary_consumer_undecodable_total", "consumer" => name.to_owned()).increment(1);
                    batch.undecodable += 1;
                }
                Err(error @ DecodeError::Unavailable(_)) => return Err(error.into()),
            }
        }
        let Some(last) = messages.last() else {
            return Ok(batch);
        };

        let mut tx = self.pool.begin().await?;
        let next = offsets::lock(&mut tx, name, topic, partition).await?;
        if let Some(first) = messages.first()
            && first.offset() > next
        {
            tracing::warn!(%topic, partition, stored = next, first = first.offset(), "offsets skipped ahead of the stored offset");
        }
        let mut events = Vec::with_capacity(decoded.len());
        let mut last_event_at = None;
        for (offset, event) in decoded {
            if offset < next {
                batch.already_applied += 1;
            } else if let Some(event) = event {
                last_event_at = self.handler.occurred_at(&event).or(last_event_at);
                events.push(Envelope {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    event,
                });
            }
        }
        batch.applied = events.len();
        self.handler.apply(&mut tx, events).await?;
        offsets::advance(
            &mut tx,
            name,
            topic,
            partition,
            next.max(last.offset() + 1),
            last_event_at,
        )
        .await?;
        tx.commit().await?;

        metrics::counter!("tributary_consumer_applied_total", "consumer" => name.to_owned())
            .increment(batch.applied as u64);
        Ok(batch)
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
