//! The projector's consumer loop.
//!
//! `select!` over the shutdown token and the consumer; after the first
//! message, take whatever else is already fetched (up to `max_batch`) without
//! waiting, so batches are large under a backlog and single events when idle.
//! Each partition's batch is applied in one transaction with its offset.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{
        BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
    },
    error::KafkaError,
    message::{BorrowedMessage, OwnedMessage},
    types::RDKafkaRespErr,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tributary_schemas::orders::OrderEvent;

use crate::{DecodeError, Decoder, ORDERS_PROJECTION, ProjectorSettings, offsets, orders};

/// Builds the orders read model from the order topic.
pub struct Projector {
    pool: PgPool,
    decoder: Decoder,
    topic: String,
    settings: ProjectorSettings,
    consumer: StreamConsumer<SeekToStoredOffsets>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// What one batch did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// Events applied to the read model.
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

impl Projector {
    /// A projector consuming `topic` with `consumer_config` (see
    /// `KafkaSettings::consumer_config`). Must run on a multi-thread Tokio
    /// runtime: assignments read stored offsets synchronously.
    pub fn new(
        pool: PgPool,
        decoder: Decoder,
        topic: String,
        consumer_config: &ClientConfig,
        settings: ProjectorSettings,
    ) -> anyhow::Result<Self> {
        let context = SeekToStoredOffsets {
            pool: pool.clone(),
            topic: topic.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let consumer: StreamConsumer<SeekToStoredOffsets> = consumer_config
            .create_with_context(context)
            .context("creating the projector's Kafka consumer")?;
        consumer
            .subscribe(&[&topic])
            .context("subscribing to the order topic")?;
        Ok(Self {
            pool,
            decoder,
            topic,
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
            let apply = self.apply_pending(fetched.by_partition, &token);
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
            applied = total.applied,
            undecodable = total.undecodable,
            "projector stopping"
        );
        self.consumer.unsubscribe();
        Ok(total)
    }

    async fn apply_pending(
        &self,
        pending: BTreeMap<i32, Vec<OwnedMessage>>,
        token: &CancellationToken,
    ) -> anyhow::Result<Batch> {
        let mut total = Batch::default();
        let mut committed = TopicPartitionList::new();
        for (partition, messages) in pending {
            let mut backoff = self.settings.retry_backoff;
            let batch = loop {
                match self.apply_partition(partition, &messages).await {
                    Ok(batch) => break batch,
                    Err(error) if !token.is_cancelled() => {
                        // Transient (database, registry): retry in place, keeping order.
                        tracing::warn!(
                            partition,
                            error = format!("{error:#}"),
                            ?backoff,
                            "batch failed; retrying"
                        );
                        metrics::counter!("tributary_projector_retries_total").increment(1);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                    Err(error) => return Err(error),
                }
            };
            total += batch;
            if let Some(last) = messages.last() {
                committed.add_partition_offset(
                    &self.topic,
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
        partition: i32,
        messages: &[OwnedMessage],
    ) -> anyhow::Result<Batch> {
        let mut batch = Batch::default();
        let mut events = Vec::with_capacity(messages.len());
        let mut last_event_at = None;
        let mut decoded = Vec::with_capacity(messages.len());
        for message in messages {
            match self.decoder.decode(message.payload()).await {
                Ok(event) => decoded.push((message.offset(), event)),
                Err(DecodeError::BadInput(reason)) => {
                    tracing::warn!(
                        topic = %self.topic, partition, offset = message.offset(), error = %reason,
                        "skipping a message that cannot be decoded"
                    );
                    metrics::counter!("tributary_projector_undecodable_total").increment(1);
                    batch.undecodable += 1;
                }
                Err(error @ DecodeError::Unavailable(_)) => return Err(error.into()),
            }
        }
        let Some(last) = messages.last() else {
            return Ok(batch);
        };

        let mut tx = self.pool.begin().await?;
        let next = offsets::lock(&mut tx, ORDERS_PROJECTION, &self.topic, partition).await?;
        if let Some(first) = messages.first()
            && first.offset() > next
        {
            tracing::warn!(
                partition,
                stored = next,
                first = first.offset(),
                "offsets skipped ahead of the stored offset"
            );
        }
        for (offset, event) in decoded {
            if offset < next {
                batch.already_applied += 1;
            } else if let Some(event) = event {
                last_event_at = Some(occurred_at(&event));
                events.push(event);
            }
        }
        orders::apply(&mut tx, &events).await?;
        let new_next = next.max(last.offset() + 1);
        offsets::advance(
            &mut tx,
            ORDERS_PROJECTION,
            &self.topic,
            partition,
            new_next,
            last_event_at,
        )
        .await?;
        tx.commit().await?;

        batch.applied = events.len();
        metrics::counter!("tributary_projector_applied_total").increment(batch.applied as u64);
        Ok(batch)
    }
}

/// Messages fetched for one batch, by partition, in offset order.
#[derive(Default)]
struct Fetched {
    by_partition: BTreeMap<i32, Vec<OwnedMessage>>,
    count: usize,
}

impl Fetched {
    fn push(&mut self, message: Result<BorrowedMessage<'_>, KafkaError>) {
        match message {
            Ok(message) => {
                self.by_partition
                    .entry(message.partition())
                    .or_default()
                    .push(message.detach());
                self.count += 1;
            }
            Err(error) => tracing::warn!(error = %error, "consumer error"),
        }
    }
}

fn occurred_at(event: &OrderEvent) -> DateTime<Utc> {
    use tributary_schemas::Event;
    let millis = match event {
        OrderEvent::Placed(e) => e.occurred_at(),
        OrderEvent::Cancelled(e) => e.occurred_at(),
        OrderEvent::Paid(e) => e.occurred_at(),
        OrderEvent::Shipped(e) => e.occurred_at(),
        OrderEvent::Delivered(e) => e.occurred_at(),
        OrderEvent::Refunded(e) => e.occurred_at(),
    };
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// On every assignment, start each partition at the offset stored beside the
/// read model (or at the beginning for a partition never applied).
struct SeekToStoredOffsets {
    pool: PgPool,
    topic: String,
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
                    self.runtime
                        .block_on(offsets::load(&self.pool, ORDERS_PROJECTION, &self.topic))
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
                                .get(&partition)
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
                tracing::info!(partitions = ?partitions(tpl), "partitions assigned");
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = ?partitions(tpl), "partitions revoked");
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
