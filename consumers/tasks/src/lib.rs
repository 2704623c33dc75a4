//! The task library: Celery-class asynchronous tasks on Kafka. The roles
//! that run them are crates of their own: `tributary-worker` (runs tasks,
//! forwards delayed ones, stores results) and `tributary-scheduler`
//! (periodic tasks); the notifier and the shop's tasks depend on this
//! library only.
//!
//! - A task is a name and an Avro record of arguments ([`Task`]); the
//!   [`Catalog`] knows every task a process can run or enqueue.
//! - A task message travels on `tasks.high`, `tasks.default` or `tasks.low`:
//!   its value is the arguments, Confluent-framed (the schema is in the
//!   registry under `tasks.<priority>-<record>`), its headers say which task,
//!   which attempt, its limits and when it was enqueued ([`wire`]).
//! - Enqueued from code inside the caller's transaction (through the outbox,
//!   so a task is enqueued exactly when the change that asked for it
//!   commits), from HTTP (`POST /tasks`) and from the CLI ([`enqueue`]).
//! - A countdown, an ETA and a retry's backoff wait in durable delay topics
//!   (`tributary-tasks.retry.<delay>`), never in a broker visibility timeout;
//!   the worker's forwarders move each message on when it is due.
//! - The worker runs tasks concurrently up to a limit, drains
//!   `tasks.high` first, acknowledges (commits the offset) only after the
//!   task's result is stored, retries with exponential backoff and jitter,
//!   and after the last attempt dead-letters the task to
//!   `tributary-tasks.dlq`. On shutdown it finishes what runs within a
//!   deadline and hands back the rest (its offsets stay uncommitted).
//! - Results live in `tasks.results`: state, attempts, timings, result or
//!   error ([`results`]), queryable through `GET /tasks` and `tributary ctl task`.
//! - Periodic tasks fire from cron schedules, once per tick however many
//!   schedulers run (`tributary-scheduler`).
//!
//! Delivery is at-least-once: a worker killed mid-task leaves the offset
//! uncommitted and the task runs again, so tasks must be idempotent.

pub mod api;
pub mod definition;
pub mod enqueue;
pub mod request;
pub mod results;
pub mod schedule;
pub mod wire;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use definition::{Catalog, Noop, Sleep, Task, TaskContext, TaskError, TaskRuntime};
pub use enqueue::Enqueuer;
pub use request::{Enqueue, EnqueueError};
pub use wire::Priority;

/// The task system's tables (`tasks.results`, `tasks.chords`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The task worker's consumer group unless `tasks.group_id` says otherwise:
/// its queue consumers are `<group>.<priority>`, its delay forwarders
/// `<group>.delay.<delay>`, its delay topics `<group>.retry.<delay>` and its
/// dead letters go to `<group>.dlq`.
pub const GROUP: &str = "tributary-tasks";

/// Settings of the task worker and of enqueueing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSettings {
    /// The worker's consumer group (default: `tributary-tasks`).
    pub group_id: Option<String>,
    /// Tasks one worker runs at once.
    pub concurrency: usize,
    /// Attempts of a task enqueued without its own retry policy.
    pub max_attempts: u32,
    /// How long one attempt of a task may run when it was enqueued without a limit.
    #[serde(with = "humantime_serde")]
    pub time_limit: Duration,
    /// Backoff before the first retry; doubles per attempt, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest backoff between two attempts.
    #[serde(with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// How long shutdown waits for running tasks before handing them back.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Periodic tasks (fired by the `scheduler` role).
    pub schedules: Vec<schedule::Schedule>,
    /// How long a scheduler holds the lease between renewals.
    #[serde(with = "humantime_serde")]
    pub scheduler_lease: Duration,
    /// A tick found later than this was missed (see `schedules.missed`).
    #[serde(with = "humantime_serde")]
    pub schedule_grace: Duration,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            group_id: None,
            concurrency: 64,
            max_attempts: 5,
            time_limit: Duration::from_secs(300),
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(10),
            schedules: Vec::new(),
            scheduler_lease: Duration::from_secs(10),
            schedule_grace: Duration::from_secs(60),
        }
    }
}

impl TaskSettings {
    /// The worker's consumer group.
    pub fn group(&self) -> &str {
        self.group_id.as_deref().unwrap_or(GROUP)
    }
}
