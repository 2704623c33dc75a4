//! The results writer: stores the worker's updates in batches (one
//! statement per batch, through `tributary_tasks::results::store`) and
//! acknowledges each job once its outcome is stored.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use sqlx::PgPool;
use tokio::sync::mpsc;
use tributary_tasks::results::{Update, store};
use uuid::Uuid;

use crate::ack::Ack;

/// What the [`Writer`] is given: an update to store, and the job to
/// acknowledge once it is stored.
type Entry = (Option<Update>, Option<Ack>);

/// Sends updates to the [`Writer`].
#[derive(Debug, Clone)]
pub(crate) struct Updates(mpsc::Sender<Entry>);

impl Updates {
    /// Queues `update` (a task starting) without acknowledging anything.
    pub(crate) async fn record(&self, update: Update) {
        let _ = self.0.send((Some(update), None)).await;
    }

    /// Queues a job's outcome; the writer acknowledges the job once it is stored.
    pub(crate) async fn finish(&self, update: Option<Update>, ack: Ack) {
        if let Err(mpsc::error::SendError((_, Some(ack)))) = self.0.send((update, Some(ack))).await
        {
            // The writer has stopped (shutdown): the job is handed back.
            drop(ack);
        }
    }
}

/// Most updates written in one statement.
const MAX_FLUSH: usize = 4096;

/// The task that writes updates in batches. It ends when every [`Updates`]
/// is dropped, after storing what was queued.
pub(crate) struct Writer {
    pool: PgPool,
    queue: mpsc::Receiver<Entry>,
    /// Jobs acknowledged so far.
    stored: Arc<AtomicU64>,
}

impl Writer {
    /// A writer counting the jobs it acknowledges in `stored`.
    pub(crate) fn new(pool: PgPool, stored: Arc<AtomicU64>) -> (Self, Updates) {
        let (sender, queue) = mpsc::channel(MAX_FLUSH * 4);
        (
            Self {
                pool,
                queue,
                stored,
            },
            Updates(sender),
        )
    }

    pub(crate) async fn run(mut self) {
        let mut pending: Vec<Entry> = Vec::new();
        while self.queue.recv_many(&mut pending, MAX_FLUSH).await > 0 {
            let mut batch: HashMap<Uuid, Update> = HashMap::with_capacity(pending.len());
            let mut waiting = Vec::new();
            for (update, ack) in pending.drain(..) {
                if let Some(update) = update {
                    match batch.get_mut(&update.task.task_id) {
                        Some(earlier) => earlier.merge(update),
                        None => {
                            batch.insert(update.task.task_id, update);
                        }
                    }
                }
                waiting.extend(ack);
            }
            let updates: Vec<Update> = batch.into_values().collect();
            if updates.is_empty() {
                self.stored
                    .fetch_add(waiting.len() as u64, std::sync::atomic::Ordering::Relaxed);
                waiting.into_iter().for_each(Ack::acknowledge);
                continue;
            }
            let mut backoff = Duration::from_millis(100);
            while let Err(error) = store(&self.pool, &updates).await {
                if tributary_consumer::failure::classify(&error)
                    == tributary_consumer::Failure::BadInput
                {
                    // A row the database refuses: store the batch row by row,
                    // the refused ones without what made them unstorable.
                    self.write_one_by_one(&updates).await;
                    break;
                }
                tracing::warn!(
                    error = format!("{error:#}"),
                    ?backoff,
                    "storing task results failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            self.stored
                .fetch_add(waiting.len() as u64, std::sync::atomic::Ordering::Relaxed);
            for ack in waiting {
                ack.acknowledge();
            }
        }
    }
}

impl Writer {
    async fn write_one_by_one(&self, updates: &[Update]) {
        for update in updates {
            let mut backoff = Duration::from_millis(100);
            let mut attempt = update.clone();
            loop {
                match store(&self.pool, std::slice::from_ref(&attempt)).await {
                    Ok(()) => break,
                    Err(error)
                        if tributary_consumer::failure::classify(&error)
                            == tributary_consumer::Failure::BadInput =>
                    {
                        if attempt.result.is_none() && attempt.task.chord_id.is_none() {
                            tracing::error!(task_id = %update.task.task_id, error = format!("{error:#}"), "a task's outcome cannot be stored; skipped");
                            break;
                        }
                        tracing::warn!(task_id = %update.task.task_id, error = format!("{error:#}"), "a task's outcome was refused; storing it without its result");
                        attempt = update.unstorable(&error);
                    }
                    Err(error) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            ?backoff,
                            "storing a task result failed; retrying"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }
}
