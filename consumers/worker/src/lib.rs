//! The task worker.
//!
//! One consumer per queue feeds a bounded channel; a dispatcher takes a job
//! whenever one of `concurrency` slots is free, always from the highest
//! queue that has one, and runs it on its own Tokio task. A job is
//! acknowledged (its offset may be committed) once its outcome is stored:
//! the result, or the retry message in a delay topic, or the dead letter.
//! Offsets commit per partition up to the oldest job not yet acknowledged,
//! so a crash re-delivers every job that had not finished.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use chrono::Utc;
use futures::FutureExt;
use rand::Rng;
use rdkafka::{
    ClientConfig, Message,
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    message::OwnedMessage,
};
use sqlx::PgPool;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;
use tributary_consumer::DeadLetters;
use tributary_registry::RegistryClient;
use tributary_schemas::framing;

use tributary_tasks::{
    Enqueuer, Priority, TaskContext, TaskError, TaskSettings,
    results::{State, Update, bounded},
    wire::{self, TaskHeaders},
};

use crate::{
    ack::{Ack, Offsets},
    delay::Forwarder,
    writer::{Updates, Writer},
};

mod ack;
mod delay;
mod writer;

/// A feeder whose jobs wait for slots holds up to this many fetched messages.
const HELD_HIGH: usize = 2048;
/// A paused feeder resumes when it holds this few.
const HELD_LOW: usize = 512;
/// A full feeder that could hand nothing over for this long pauses its
/// partitions and keeps polling.
const STUCK: Duration = Duration::from_secs(10);

/// How often acknowledged offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// Where the worker reads and writes: a consumer per queue, a forwarder per
/// delay topic, the dead letters.
pub struct WorkerWiring {
    /// The consumer of each queue (its own group, `<group>.<priority>`).
    pub queues: Vec<(Priority, String, ClientConfig)>,
    /// The consumer of each delay topic, with its topic and its delay.
    pub delays: Vec<(Duration, String, ClientConfig)>,
    /// The dead-letter producer (`<group>.dlq`).
    pub dead_letters: DeadLetters,
}

impl std::fmt::Debug for WorkerWiring {
    // Client configurations hold credentials: only the topics are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerWiring")
            .field(
                "queues",
                &self.queues.iter().map(|(_, t, _)| t).collect::<Vec<_>>(),
            )
            .field(
                "delays",
                &self.delays.iter().map(|(_, t, _)| t).collect::<Vec<_>>(),
            )
            .field("dead_letters", &self.dead_letters)
            .finish()
    }
}

/// Runs tasks. See the module documentation.
pub struct Worker {
    pool: PgPool,
    enqueuer: Enqueuer,
    registry: RegistryClient,
    settings: TaskSettings,
    queues: Vec<(Priority, Arc<StreamConsumer>)>,
    forwarders: Vec<Forwarder>,
    dead_letters: DeadLetters,
    report: Arc<Counters>,
}

/// What a worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Jobs whose outcome is stored and whose offset may be committed.
    pub acknowledged: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Tasks that failed for good (permanent error).
    pub failed: u64,
    /// Tasks whose last attempt failed.
    pub dead: u64,
}

/// What a running worker has done so far (see [`Worker::progress`]).
#[derive(Debug, Clone)]
pub struct Progress(Arc<Counters>);

impl Progress {
    /// The counts now.
    pub fn report(&self) -> WorkerReport {
        self.0.report()
    }
}

#[derive(Debug, Default)]
struct Counters {
    acknowledged: Arc<AtomicU64>,
    succeeded: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
}

impl Counters {
    fn report(&self) -> WorkerReport {
        WorkerReport {
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead: self.dead.load(Ordering::Relaxed),
        }
    }
}

/// A fetched task message and where to acknowledge it.
struct Job {
    priority: Priority,
    message: OwnedMessage,
    offsets: Arc<Offsets>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("tasks", self.enqueuer.catalog())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for the tasks `enqueuer` knows, subscribed per `wiring`.
    pub fn new(
        pool: PgPool,
        enqueuer: Enqueuer,
        registry: RegistryClient,
        wiring: WorkerWiring,
        settings: TaskSettings,
    ) -> anyhow::Result<Self> {
        let mut queues = Vec::new();
        for (priority, topic, config) in wiring.queues {
            let consumer: StreamConsumer = config
                .create()
                .with_context(|| format!("creating the consumer of {topic}"))?;
            consumer
                .subscribe(&[&topic])
                .with_context(|| format!("subscribing to {topic}"))?;
            queues.push((priority, Arc::new(consumer)));
        }
        queues.sort_by_key(|(priority, _)| *priority);
        let forwarders = wiring
            .delays
            .into_iter()
            .map(|(delay, topic, config)| {
                Forwarder::new(
                    delay,
                    &topic,
                    &config,
                    enqueuer.clone(),
                    wiring.dead_letters.clone(),
                )
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            pool,
            enqueuer,
            registry,
            settings,
            queues,
            forwarders,
            dead_letters: wiring.dead_letters,
            report: Arc::default(),
        })
    }

    /// A live view of what the worker has done so far.
    pub fn progress(&self) -> Progress {
        Progress(Arc::clone(&self.report))
    }

    /// Runs tasks until `token` is cancelled; then stops taking new ones,
    /// lets running ones finish within `drain_timeout`, hands back the rest
    /// and commits what was acknowledged.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<WorkerReport> {
        let this = Arc::new(self);
        let (writer, updates) =
            Writer::new(this.pool.clone(), Arc::clone(&this.report.acknowledged));
        let writer = tokio::spawn(writer.run());
        let mut background = JoinSet::new();
        let mut channels = Vec::new();
        for (priority, consumer) in &this.queues {
            let (sender, receiver) = mpsc::channel(this.settings.concurrency.max(1));
            let offsets = Arc::new(Offsets::default());
            background.spawn(feed(
                *priority,
                Arc::clone(consumer),
                offsets,
                sender,
                token.clone(),
            ));
            channels.push(receiver);
        }
        for forwarder in &this.forwarders {
            background.spawn(forwarder.clone().run(token.clone()));
        }

        let slots = Arc::new(Semaphore::new(this.settings.concurrency.max(1)));
        let mut running = JoinSet::new();
        loop {
            let slot = tokio::select! {
                () = token.cancelled() => break,
                slot = Arc::clone(&slots).acquire_owned() => slot?,
            };
            while running.try_join_next().is_some() {}
            let Some(job) = next_job(&mut channels, &token).await else {
                break;
            };
            running.spawn(Arc::clone(&this).run_job(job, updates.clone(), slot));
        }

        // Stop taking jobs; what is fetched and not started is handed back.
        let drained = tokio::time::timeout(this.settings.drain_timeout, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                running = running.len(),
                "drain deadline passed; handing back the tasks still running"
            );
            running.abort_all();
            while running.join_next().await.is_some() {}
        }
        drop(updates);
        writer.await.context("the results writer panicked")?;
        // Every job has stored its outcome: the feeders commit and stop.
        drop(channels);
        // The feeders commit what was acknowledged before they return.
        while let Some(ended) = background.join_next().await {
            if let Err(error) = ended.context("a task worker loop panicked")? {
                tracing::warn!(error = format!("{error:#}"), "a task worker loop failed");
            }
        }
        for (_, consumer) in &this.queues {
            consumer.unsubscribe();
        }
        let report = this.report.report();
        tracing::info!(?report, "task worker stopped");
        Ok(report)
    }

    /// One job: its attempt, its outcome stored, then its acknowledgement.
    /// A job aborted at shutdown is never acknowledged: it is handed back.
    async fn run_job(self: Arc<Self>, job: Job, updates: Updates, slot: OwnedSemaphorePermit) {
        let outcome = self.attempt(&job, &updates).await;
        // The slot is free once the attempt is over; the writer acknowledges
        // the job once its outcome is stored.
        drop(slot);
        let ack = Ack {
            offsets: job.offsets,
            partition: (job.message.topic().to_owned(), job.message.partition()),
            offset: job.message.offset(),
        };
        updates.finish(outcome, ack).await;
    }

    /// One attempt and its consequences (a retry produced, a dead letter
    /// sent); returns the update to store, if any.
    async fn attempt(&self, job: &Job, updates: &Updates) -> Option<Update> {
        let message = &job.message;
        let task = match TaskHeaders::read(message) {
            Ok(task) => task,
            Err(error) => {
                self.dead_letter(message, &format!("not a task message: {error}"))
                    .await;
                self.report.failed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if wire::header(message, "redriven_from").is_some() {
            // A redriven dead letter: its task may leave `failed` or `dead`.
            self.revive(&task).await;
        }
        let started_at = Utc::now();
        let waited = (started_at - task.due_at.unwrap_or(task.enqueued_at))
            .to_std()
            .unwrap_or_default();
        metrics::histogram!("tributary_task_start_delay_seconds", "priority" => job.priority.as_str())
            .record(waited.as_secs_f64());
        let outcome = match self.prepare(message, &task).await {
            Ok((runner, writer, datum)) => {
                updates
                    .record(Update {
                        task: task.clone(),
                        state: State::Running,
                        started_at: Some(started_at),
                        finished_at: None,
                        due_at: None,
                        result: None,
                        error: None,
                    })
                    .await;
                let ctx = TaskContext {
                    task_id: task.task_id,
                    name: task.task.clone(),
                    priority: task.priority,
                    attempt: task.attempt,
                    max_attempts: task.max_attempts,
                    chord_id: task.chord_id,
                    callback_of: task.callback_of,
                    runtime: Some(tributary_tasks::enqueue::runtime(
                        self.pool.clone(),
                        self.enqueuer.clone(),
                    )),
                };
                let attempt = runner.run(ctx, writer.as_ref().map(|w| &w.schema), datum);
                // A panicking task fails its attempt like an error would.
                let attempt = std::panic::AssertUnwindSafe(attempt).catch_unwind();
                match tokio::time::timeout(task.time_limit, attempt).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(panic)) => Err(TaskError::Retry(anyhow::anyhow!(
                        "the task panicked: {}",
                        panic_message(panic.as_ref())
                    ))),
                    Err(_) => Err(TaskError::Retry(anyhow::anyhow!(
                        "the time limit of {:?} passed",
                        task.time_limit
                    ))),
                }
            }
            Err(error) => Err(error),
        };
        let finished = Update {
            task: task.clone(),
            state: State::Succeeded,
            started_at: Some(started_at),
            finished_at: Some(Utc::now()),
            due_at: None,
            result: None,
            error: None,
        };
        let update = match outcome {
            Ok(result) => {
                self.report.succeeded.fetch_add(1, Ordering::Relaxed);
                Update {
                    result: Some(result),
                    ..finished
                }
            }
            Err(TaskError::Retry(error)) if task.attempt < task.max_attempts => {
                let due_at = Utc::now() + self.backoff(task.attempt);
                let next = TaskHeaders {
                    attempt: task.attempt + 1,
                    due_at: Some(due_at),
                    ..task.clone()
                };
                let value = message.payload().unwrap_or_default().to_vec();
                let retry = self.enqueuer.outgoing(next, value, wire::carried(message));
                let mut backoff = Duration::from_millis(100);
                while let Err(send) = self.enqueuer.send(&retry).await {
                    tracing::warn!(error = format!("{send:#}"), task_id = %task.task_id, "producing a retry failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                tracing::info!(task = %task.task, task_id = %task.task_id, attempt = task.attempt, %due_at, error = format!("{error:#}"), "task failed; retrying");
                self.report.retried.fetch_add(1, Ordering::Relaxed);
                Update {
                    state: State::Retrying,
                    due_at: Some(due_at),
                    error: Some(bounded(format!("{error:#}"))),
                    ..finished
                }
            }
            Err(error) => {
                let (state, reason) = match &error {
                    TaskError::Permanent(e) => (State::Failed, bounded(format!("{e:#}"))),
                    TaskError::Retry(e) => (
                        State::Dead,
                        bounded(format!(
                            "attempt {} of {}: {e:#}",
                            task.attempt, task.max_attempts
                        )),
                    ),
                };
                self.dead_letter(message, &reason).await;
                let counter = match state {
                    State::Failed => &self.report.failed,
                    _ => &self.report.dead,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Update {
                    state,
                    error: Some(reason),
                    ..finished
                }
            }
        };
        metrics::counter!("tributary_tasks_total", "task" => task.task.clone(), "state" => update.state.as_str())
            .increment(1);
        Some(update)
    }

    /// Lets a redriven task's row leave its final state, so the redriven
    /// attempt's outcome is recorded.
    async fn revive(&self, task: &TaskHeaders) {
        let revived = tributary_tasks::results::reopen(&self.pool, task).await;
        if let Err(error) = revived {
            tracing::warn!(error = %error, task_id = %task.task_id, "could not reopen a redriven task's row");
        }
    }

    /// The task's runner, its arguments' writer schema (`None` when it is
    /// the current one) and the arguments' datum.
    async fn prepare<'m>(
        &self,
        message: &'m OwnedMessage,
        task: &TaskHeaders,
    ) -> Result<
        (
            &Arc<dyn tributary_tasks::definition::Runner>,
            Option<Arc<tributary_registry::WriterSchema>>,
            &'m [u8],
        ),
        TaskError,
    > {
        let permanent = |reason: String| TaskError::Permanent(anyhow::anyhow!(reason));
        let runner = self
            .enqueuer
            .catalog()
            .runner(&task.task)
            .ok_or_else(|| permanent(format!("no task is named `{}` here", task.task)))?;
        let payload = message
            .payload()
            .ok_or_else(|| permanent("the message has no arguments".into()))?;
        let (schema_id, datum) =
            framing::split(payload).map_err(|e| permanent(format!("the arguments: {e}")))?;
        if self.enqueuer.schema_id(&task.task) == Some(schema_id) {
            return Ok((runner, None, datum));
        }
        match self.registry.schema_by_id(schema_id).await {
            Ok(writer) => Ok((runner, Some(writer), datum)),
            Err(tributary_registry::Error::Registry { status, .. }) if status < 500 => Err(
                permanent(format!("schema id {schema_id} is not in the registry")),
            ),
            Err(error) => Err(TaskError::Retry(
                anyhow::Error::new(error).context("fetching the arguments' schema"),
            )),
        }
    }

    /// The wait before attempt `attempt + 1`: `retry_backoff` doubled per
    /// attempt, at most `max_retry_backoff`, with jitter (between half of
    /// it and all of it).
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .settings
            .retry_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.settings.max_retry_backoff);
        ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Dead-letters `message`, trying until the broker has it.
    async fn dead_letter(&self, message: &OwnedMessage, reason: &str) {
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = self.dead_letters.send(message, reason).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "dead-lettering a task failed; trying again"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        tracing::warn!(
            topic = message.topic(),
            offset = message.offset(),
            reason,
            "task dead-lettered"
        );
    }
}

/// What a panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The next job, from the highest queue that has one; `None` at shutdown.
async fn next_job(channels: &mut [mpsc::Receiver<Job>], token: &CancellationToken) -> Option<Job> {
    // Take from the highest queue holding a job right now.
    for channel in channels.iter_mut() {
        if let Ok(job) = channel.try_recv() {
            return Some(job);
        }
    }
    // None holds one: the first to get one.
    let waits = channels
        .iter_mut()
        .map(|channel| Box::pin(channel.recv()))
        .collect::<Vec<_>>();
    tokio::select! {
        () = token.cancelled() => None,
        (job, _, _) = futures::future::select_all(waits) => job,
    }
}

/// A queue's feeder: fetches, records each offset as in flight, hands the
/// job over, and commits acknowledged offsets as it goes and when it stops.
///
/// While the slots are busy it holds up to [`HELD_HIGH`] fetched messages
/// and then stops reading. If no slot frees for [`STUCK`] (long tasks), it
/// pauses its partitions and reads on, so the consumer keeps serving the
/// group (rebalances, the poll interval) and never looks dead to it.
/// Pausing drops librdkafka's prefetch, so it is kept for that case only.
async fn feed(
    priority: Priority,
    consumer: Arc<StreamConsumer>,
    offsets: Arc<Offsets>,
    jobs: mpsc::Sender<Job>,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // Fetched while the slots were taken, oldest first.
    let mut held: VecDeque<OwnedMessage> = VecDeque::new();
    let mut paused = false;
    let mut handed_over = Instant::now();
    loop {
        let full = held.len() >= HELD_HIGH;
        tokio::select! {
            () = token.cancelled() => break,
            _ = tick.tick() => offsets.commit(&consumer, CommitMode::Async),
            slot = jobs.reserve(), if !held.is_empty() => {
                let Ok(slot) = slot else { break };
                let message = held.pop_front().expect("held is not empty");
                slot.send(Job { priority, message, offsets: Arc::clone(&offsets) });
                handed_over = Instant::now();
                if paused && held.len() <= HELD_LOW {
                    pause(&consumer, false);
                    paused = false;
                }
            }
            () = tokio::time::sleep_until(handed_over + STUCK), if full && !paused => {
                pause(&consumer, true);
                paused = true;
            }
            message = consumer.recv(), if !full || paused => match message {
                Ok(message) => {
                    let message = message.detach();
                    offsets.fetched(&message);
                    if held.is_empty() && let Ok(slot) = jobs.try_reserve() {
                        slot.send(Job { priority, message, offsets: Arc::clone(&offsets) });
                        handed_over = Instant::now();
                    } else {
                        held.push_back(message);
                        if paused {
                            // A rebalance: new partitions come unpaused.
                            pause(&consumer, true);
                        }
                    }
                }
                Err(error) => tracing::warn!(%priority, error = %error, "task consumer error"),
            },
        }
    }
    // Jobs still running are acknowledged until the worker drops the
    // channel's receiver; wait for that, then commit for good. What is held
    // was never started: it is handed back.
    jobs.closed().await;
    offsets.commit(&consumer, CommitMode::Sync);
    Ok(())
}

/// Pauses (or resumes) every partition the consumer holds.
fn pause(consumer: &StreamConsumer, pause: bool) {
    let result = consumer.assignment().and_then(|assigned| {
        if pause {
            consumer.pause(&assigned)
        } else {
            consumer.resume(&assigned)
        }
    });
    if let Err(error) = result {
        tracing::warn!(error = %error, pause, "cannot pause or resume the task consumer");
    }
}
