//! Reading a dead-letter topic from the beginning to its high watermarks
//! with an assigned consumer: it joins no group and commits nothing, so a
//! scan never disturbs a running role.

use std::time::Duration;

use anyhow::{Context, anyhow};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer as _, StreamConsumer},
    error::KafkaError,
    message::OwnedMessage,
};

use super::DeadLetterAdmin;

/// How long a read waits for the next message below the high watermark.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long metadata and watermark requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A partition and the offsets to read from it: `low..high`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Partition {
    pub(crate) id: i32,
    pub(crate) low: i64,
    pub(crate) high: i64,
}

/// The partitions of `topic` with their watermarks; none when it does not exist.
pub(crate) async fn partitions(
    admin: &DeadLetterAdmin,
    topic: &str,
) -> anyhow::Result<Vec<Partition>> {
    let config = admin.kafka.client_config(&admin.bootstrap_servers);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Partition>> {
        let consumer: BaseConsumer = config.create().context("creating a Kafka client")?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
            .with_context(|| format!("reading the metadata of {topic}"))?;
        let Some(found) = metadata.topics().first().filter(|t| t.error().is_none()) else {
            return Ok(Vec::new());
        };
        let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, id, METADATA_TIMEOUT)
                    .with_context(|| format!("reading the offsets of {topic} partition {id}"))?;
                Ok(Partition { id, low, high })
            })
            .collect()
    })
    .await?
}

/// Reads partitions one after the other, each from `low` to `high`, with
/// an assigned consumer: no group is joined, nothing is committed.
pub(crate) struct Scan {
    consumer: StreamConsumer,
    topic: String,
    partitions: Vec<Partition>,
    index: usize,
    next: Option<i64>,
}

impl Scan {
    /// Every partition of `topic`, from the beginning to the high watermarks now.
    pub(crate) async fn start(admin: &DeadLetterAdmin, topic: &str) -> anyhow::Result<Self> {
        let partitions = partitions(admin, topic).await?;
        Self::new(admin, topic, partitions)
    }

    pub(crate) fn new(
        admin: &DeadLetterAdmin,
        topic: &str,
        partitions: Vec<Partition>,
    ) -> anyhow::Result<Self> {
        let mut config = admin
            .kafka
            .consumer_config(&admin.bootstrap_servers, "tributary-ctl-dlq");
        config.set("enable.partition.eof", "true");
        Ok(Self {
            consumer: config.create().context("creating a Kafka consumer")?,
            topic: topic.to_owned(),
            partitions,
            index: 0,
            next: None,
        })
    }

    /// Messages the scan covers.
    pub(crate) fn total(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| u64::try_from(p.high - p.low).unwrap_or_default())
            .sum()
    }

    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<OwnedMessage>> {
        loop {
            let Some(partition) = self.partitions.get(self.index).copied() else {
                return Ok(None);
            };
            let next = match self.next {
                Some(next) => next,
                None => {
                    if partition.low < partition.high {
                        let mut assignment = TopicPartitionList::new();
                        assignment.add_partition_offset(
                            &self.topic,
                            partition.id,
                            Offset::Offset(partition.low),
                        )?;
                        self.consumer.assign(&assignment).with_context(|| {
                            format!("assigning {} partition {}", self.topic, partition.id)
                        })?;
                    }
                    self.next = Some(partition.low);
                    partition.low
                }
            };
            if next >= partition.high {
                self.index += 1;
                self.next = None;
                continue;
            }
            let received = tokio::time::timeout(READ_TIMEOUT, self.consumer.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "reading {} partition {}: offset {next} did not arrive within {} s",
                        self.topic,
                        partition.id,
                        READ_TIMEOUT.as_secs()
                    )
                })?;
            let message = match received {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(p)) if p == partition.id => {
                    // The end came before the watermark said: nothing more to read.
                    self.next = Some(partition.high);
                    continue;
                }
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("reading {} partition {}", self.topic, partition.id)
                    });
                }
            };
            // Left over from the previous partition's assignment, or already seen.
            if message.partition() != partition.id || message.offset() < next {
                continue;
            }
            self.next = Some(message.offset() + 1);
            if message.offset() < partition.high {
                return Ok(Some(message.detach()));
            }
        }
    }
}
