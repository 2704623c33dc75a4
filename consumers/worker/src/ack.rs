//! Acknowledgements: a job's offset may be committed once its outcome is
//! stored; commits go up to the oldest offset not yet acknowledged.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    message::OwnedMessage,
};

/// Where to acknowledge a job once its outcome is stored.
#[derive(Debug)]
pub(crate) struct Ack {
    pub(crate) offsets: Arc<Offsets>,
    pub(crate) partition: (String, i32),
    pub(crate) offset: i64,
}

impl Ack {
    pub(crate) fn acknowledge(self) {
        self.offsets.acknowledge(self.partition, self.offset);
    }
}

/// Per partition: the offsets fetched and not yet acknowledged, and the
/// next offset to fetch. Commits go up to the oldest unacknowledged one.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    partitions: Mutex<HashMap<(String, i32), Partition>>,
}

#[derive(Debug, Default)]
struct Partition {
    /// Offsets fetched and not yet acknowledged, with how many copies (a
    /// partition lost and assigned back is fetched again).
    in_flight: BTreeMap<i64, usize>,
    next: i64,
    committed: i64,
}

impl Offsets {
    pub(crate) fn fetched(&self, message: &OwnedMessage) {
        let mut partitions = self.lock();
        let partition = partitions
            .entry((message.topic().to_owned(), message.partition()))
            .or_default();
        *partition.in_flight.entry(message.offset()).or_default() += 1;
        partition.next = partition.next.max(message.offset() + 1);
    }

    pub(crate) fn acknowledge(&self, partition: (String, i32), offset: i64) {
        if let Some(partition) = self.lock().get_mut(&partition)
            && let Some(copies) = partition.in_flight.get_mut(&offset)
        {
            *copies -= 1;
            if *copies == 0 {
                partition.in_flight.remove(&offset);
            }
        }
    }

    /// Commits each partition up to its oldest unacknowledged offset: what
    /// moved since the last commit, or (`CommitMode::Sync`, when stopping)
    /// every partition, in case an asynchronous commit failed.
    pub(crate) fn commit(&self, consumer: &StreamConsumer, mode: CommitMode) {
        let mut list = TopicPartitionList::new();
        let every = matches!(mode, CommitMode::Sync);
        for ((topic, partition), state) in self.lock().iter_mut() {
            let upto = state
                .in_flight
                .first_key_value()
                .map_or(state.next, |(offset, _)| *offset);
            if upto > state.committed || (every && upto > 0) {
                if let Err(error) =
                    list.add_partition_offset(topic, *partition, Offset::Offset(upto))
                {
                    tracing::warn!(error = %error, "cannot list an offset to commit");
                    continue;
                }
                state.committed = upto;
            }
        }
        if list.count() > 0
            && let Err(error) = consumer.commit(&list, mode)
        {
            tracing::debug!(error = %error, "committing task offsets failed");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Partition>> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
