//! Durable delays: countdowns, ETAs and retries wait in delay topics.
//!
//! A delay topic (`<group>.retry.<delay>`) holds task messages whose
//! `due_at` lies ahead. Its forwarder reads one message at a time, waits
//! until it is due, or until it has waited the topic's delay when it is due
//! later than that (then it hops to the delay topic its remaining wait fits),
//! produces it on, waits for the broker's acknowledgement and only then
//! commits its offset: a crash repeats a forward, it never loses one.
//!
//! One message at a time, across the topic's partitions: a message waits
//! behind whatever is ahead of it. Messages go to the topic of the longest
//! delay not above their wait, so a topic's messages come due in about the
//! order they arrive. While it waits the forwarder pauses its partitions and
//! keeps polling, so a long wait does not drop it from its group.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    message::OwnedMessage,
};
use tokio_util::sync::CancellationToken;
use tributary_consumer::DeadLetters;

use tributary_tasks::{
    Enqueuer,
    wire::{self, TaskHeaders},
};

/// Moves a delay topic's messages on when they are due.
#[derive(Clone)]
pub(crate) struct Forwarder {
    delay: Duration,
    consumer: Arc<StreamConsumer>,
    enqueuer: Enqueuer,
    dead_letters: DeadLetters,
}

impl Forwarder {
    /// A forwarder of `topic` (holding waits of `delay` and up) with `config`.
    pub(crate) fn new(
        delay: Duration,
        topic: &str,
        config: &ClientConfig,
        enqueuer: Enqueuer,
        dead_letters: DeadLetters,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = config
            .create()
            .with_context(|| format!("creating the consumer of {topic}"))?;
        consumer
            .subscribe(&[topic])
            .with_context(|| format!("subscribing to {topic}"))?;
        Ok(Self {
            delay,
            consumer: Arc::new(consumer),
            enqueuer,
            dead_letters,
        })
    }

    /// Forwards until `token` is cancelled; the message it was waiting for
    /// stays uncommitted (it is read again).
    pub(crate) async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        // Fetched while waiting for a message to come due, oldest first.
        let mut fetched: VecDeque<OwnedMessage> = VecDeque::new();
        loop {
            let message = match fetched.pop_front() {
                Some(message) => message,
                None => tokio::select! {
                    () = token.cancelled() => break,
                    message = self.consumer.recv() => match message {
                        Ok(message) => message.detach(),
                        Err(error) => {
                            tracing::warn!(error = %error, "delay consumer error");
                            continue;
                        }
                    },
                },
            };
            let task = match TaskHeaders::read(&message) {
                Ok(task) => task,
                Err(error) => {
                    let reason = format!("not a task message: {error}");
                    let mut backoff = Duration::from_millis(100);
                    while let Err(error) = self.dead_letters.send(&message, &reason).await {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "dead-lettering failed; trying again"
                        );
                        tokio::select! {
                            () = token.cancelled() => return Ok(()),
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                    self.commit(&message);
                    continue;
                }
            };
            let now = Utc::now();
            let due = task.due_at.unwrap_or(now);
            let waited_enough = written_at(&message).map(|at| at + self.delay);
            let until = match waited_enough {
                Some(hop) if hop < due => hop,
                _ => due,
            };
            if let Ok(wait) = (until - now).to_std() {
                // Wait with the partitions paused, polling on: the consumer
                // keeps serving its group however long the wait.
                self.pause(true);
                let deadline = tokio::time::Instant::now() + wait;
                let cancelled = loop {
                    tokio::select! {
                        () = token.cancelled() => break true,
                        () = tokio::time::sleep_until(deadline) => break false,
                        more = self.consumer.recv() => match more {
                            Ok(more) => {
                                fetched.push_back(more.detach());
                                // A rebalance: new partitions come unpaused.
                                self.pause(true);
                            }
                            Err(error) => tracing::warn!(error = %error, "delay consumer error"),
                        },
                    }
                };
                self.pause(false);
                if cancelled {
                    break;
                }
            }
            let value = message.payload().unwrap_or_default().to_vec();
            let onward = self.enqueuer.outgoing(task, value, wire::carried(&message));
            let mut backoff = Duration::from_millis(100);
            while let Err(error) = self.enqueuer.send(&onward).await {
                tracing::warn!(error = format!("{error:#}"), task_id = %onward.task_id, "forwarding a delayed task failed; trying again");
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            self.commit(&message);
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    /// Pauses (or resumes) every partition the consumer holds.
    fn pause(&self, pause: bool) {
        let result = self.consumer.assignment().and_then(|assigned| {
            if pause {
                self.consumer.pause(&assigned)
            } else {
                self.consumer.resume(&assigned)
            }
        });
        if let Err(error) = result {
            tracing::warn!(error = %error, pause, "cannot pause or resume a delay consumer");
        }
    }

    fn commit(&self, message: &OwnedMessage) {
        let mut list = TopicPartitionList::new();
        let added = list.add_partition_offset(
            message.topic(),
            message.partition(),
            Offset::Offset(message.offset() + 1),
        );
        if let Err(error) = added.and_then(|()| self.consumer.commit(&list, CommitMode::Async)) {
            tracing::debug!(error = %error, "committing a delay offset failed");
        }
    }
}

/// When the broker (or the producer) stamped the message.
fn written_at(message: &OwnedMessage) -> Option<DateTime<Utc>> {
    message
        .timestamp()
        .to_millis()
        .and_then(DateTime::from_timestamp_millis)
}
