//! A request to run a task ([`Enqueue`]), and why one can be refused.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{Priority, wire};

/// A task to enqueue.
#[derive(Debug, Clone)]
pub struct Enqueue {
    /// The task's name.
    pub task: String,
    /// Its arguments, an Avro datum of the task's record.
    pub args: Vec<u8>,
    /// Its queue.
    pub priority: Priority,
    /// Not before (a countdown or an ETA); `None` runs it as soon as a worker is free.
    pub due_at: Option<DateTime<Utc>>,
    /// Attempts in all (default: `tasks.max_attempts`).
    pub max_attempts: Option<u32>,
    /// How long one attempt may run (default: `tasks.time_limit`).
    pub time_limit: Option<Duration>,
    /// The correlation id of whatever asked for it.
    pub correlation_id: Option<String>,
    /// Whether `due_at` came from a countdown (for error messages).
    pub(crate) countdown_given: bool,
}

impl Enqueue {
    /// Task `name` with `args` already encoded (an Avro datum of its
    /// record; [`Enqueue::new`] and [`Enqueue::json`] check them).
    pub fn raw(task: &str, args: Vec<u8>) -> Self {
        Self {
            task: task.to_owned(),
            args,
            priority: Priority::Default,
            due_at: None,
            max_attempts: None,
            time_limit: None,
            correlation_id: None,
            countdown_given: false,
        }
    }

    /// On `priority`'s queue.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Not before `countdown` from now (more than [`wire::MAX_DELAY`] is
    /// refused when the task is enqueued).
    pub fn countdown(mut self, countdown: Duration) -> Self {
        let countdown = chrono::Duration::from_std(countdown.min(wire::MAX_DELAY * 2))
            .unwrap_or(chrono::Duration::MAX);
        self.due_at = Utc::now().checked_add_signed(countdown);
        self.countdown_given = true;
        self
    }

    /// Not before `eta`.
    pub fn eta(mut self, eta: DateTime<Utc>) -> Self {
        self.due_at = Some(eta);
        self.countdown_given = false;
        self
    }

    /// With `attempts` in all.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// With `limit` per attempt.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }
}

/// Why a task could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// No task of that name.
    #[error("no task is named `{0}`")]
    UnknownTask(String),
    /// The arguments do not fit the task's record.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// A limit is out of range.
    #[error("{field}: {message}")]
    Invalid {
        /// The setting at fault.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// The database or the broker failed.
    #[error(transparent)]
    Unavailable(#[from] anyhow::Error),
}

/// Arguments that do not fit the task's record.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// The JSON does not deserialize: the field at fault (`args.order_id`) and why.
    #[error("{field}: {message}")]
    Field {
        /// Path of the field, starting with `args`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The value does not encode with the record's schema.
    #[error("the arguments do not fit the schema: {0}")]
    Schema(#[from] apache_avro::Error),
}
