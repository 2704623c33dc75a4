//! `tasks.results`: what happened to each task.
//!
//! States: `pending` (enqueued), `running`, `retrying` (waiting for its next
//! attempt in a delay topic), and the final ones: `succeeded`, `failed` (a
//! permanent error: not retried) and `dead` (the last attempt failed). Both
//! `failed` and `dead` tasks are in the dead-letter topic.
//!
//! The worker's updates go through one [`Writer`] that coalesces them and
//! writes a batch per statement: a task that starts and ends within one
//! flush costs one row write.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::wire::TaskHeaders;

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Enqueued, not started.
    Pending,
    /// An attempt is running.
    Running,
    /// An attempt failed; the next one waits in a delay topic.
    Retrying,
    /// Done.
    Succeeded,
    /// A permanent error: not retried, dead-lettered.
    Failed,
    /// The last attempt failed: dead-lettered.
    Dead,
}

impl State {
    /// Every state, in the order a task goes through them.
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Running,
        State::Retrying,
        State::Succeeded,
        State::Failed,
        State::Dead,
    ];

    /// The state's name in `tasks.results`.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Dead => "dead",
        }
    }

    /// Whether the task is over.
    pub const fn is_final(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Dead)
    }
}

impl std::str::FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a state (pending, running, retrying, succeeded, failed, dead)"
                )
            })
    }
}

/// Writes the `pending` row of a task just enqueued.
pub(crate) async fn insert_pending(
    conn: &mut PgConnection,
    task: &TaskHeaders,
) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO tasks.results (task_id, name, priority, state, attempts, max_attempts, enqueued_at, due_at, chord_id)
         VALUES ($1, $2, $3, 'pending', 0, $4, $5, $6, $7)",
        task.task_id,
        &task.task,
        task.priority.as_str(),
        task.max_attempts as i32,
        task.enqueued_at,
        task.due_at,
        task.chord_id
    )
    .execute(conn)
    .await
    .context("recording the pending task")?;
    Ok(())
}

/// One change to a task's row.
#[derive(Debug, Clone)]
pub struct Update {
    /// The task, as its headers say.
    pub task: TaskHeaders,
    /// Its new state.
    pub state: State,
    /// When its attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a state after running.
    pub finished_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (retrying).
    pub due_at: Option<DateTime<Utc>>,
    /// What it returned.
    pub result: Option<serde_json::Value>,
    /// Why its attempt failed.
    pub error: Option<String>,
}

impl Update {
    /// Folds another update of the same task into this one; the one further
    /// along (later attempt, then later state) wins, so two copies of one
    /// delivery never move a row backwards.
    pub fn merge(&mut self, other: Update) {
        let started_at = other.started_at.or(self.started_at);
        if other.progress() >= self.progress() {
            *self = other;
        }
        self.started_at = started_at;
    }

    fn progress(&self) -> (u32, u8) {
        let stage = match self.state {
            State::Pending => 0,
            State::Running => 1,
            State::Retrying => 2,
            State::Succeeded | State::Failed | State::Dead => 3,
        };
        (self.task.attempt, stage)
    }

    /// A copy the database accepts whatever the task produced: no result,
    /// no chord, the reason it could not be stored.
    pub fn unstorable(&self, why: &anyhow::Error) -> Update {
        let mut task = self.task.clone();
        task.chord_id = None;
        Update {
            task,
            state: if self.state.is_final() {
                State::Failed
            } else {
                self.state
            },
            result: None,
            error: Some(bounded(format!("the outcome could not be stored: {why:#}"))),
            ..self.clone()
        }
    }
}

/// One transaction for a batch of updates (one per task). A row in a final
/// state, or at a later attempt, is left as it is. A chord member reaching a
/// final state is counted towards its chord, once; a chord whose members
/// have all finished gets its callback enqueued in the same transaction.
pub async fn store(pool: &PgPool, updates: &[Update]) -> anyhow::Result<()> {
    let n = updates.len();
    let mut ids = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut enqueued = Vec::with_capacity(n);
    let mut due = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut finished = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut chords = Vec::with_capacity(n);
    for update in updates {
        ids.push(update.task.task_id);
        names.push(update.task.task.as_str());
        priorities.push(update.task.priority.as_str());
        states.push(update.state.as_str());
        attempts.push(update.task.attempt as i32);
        max_attempts.push(update.task.max_attempts as i32);
        enqueued.push(update.task.enqueued_at);
        due.push(update.due_at);
        started.push(update.started_at);
        finished.push(update.finished_at);
        results.push(update.result.clone());
        errors.push(update.error.as_deref());
        chords.push(update.task.chord_id);
    }
    let mut tx = pool.begin().await?;
    let counted = sqlx::query_file!(
        "src/results/store.sql",
        &ids,
        &names as &[&str],
        &priorities as &[&str],
        &states as &[&str],
        &attempts,
        &max_attempts,
        &enqueued,
        &due as &[Option<DateTime<Utc>>],
        &started as &[Option<DateTime<Utc>>],
        &finished as &[Option<DateTime<Utc>>],
        &results as &[Option<serde_json::Value>],
        &errors as &[Option<&str>],
        &chords as &[Option<Uuid>],
    )
    .fetch_all(&mut *tx)
    .await
    .context("storing task results")?;
    let completed: Vec<Uuid> = counted
        .into_iter()
        .filter_map(|row| row.complete.then_some(row.chord_id))
        .collect();
    complete_chords(&mut tx, &completed).await?;
    tx.commit().await.context("storing task results")?;
    Ok(())
}

/// Enqueues the callbacks of `chords`, whose members have all finished,
/// through the outbox; a chord completes once.
pub(crate) async fn complete_chords(
    conn: &mut PgConnection,
    chords: &[Uuid],
) -> anyhow::Result<()> {
    if chords.is_empty() {
        return Ok(());
    }
    // The callbacks go in through the outbox crate's insert (`outbox_query!`
    // ends this statement with it), in the statement that completes their chords.
    tributary_outbox::outbox_query!(
        "WITH completed AS (
             UPDATE tasks.chords SET completed_at = now()
             WHERE chord_id = ANY($1) AND completed_at IS NULL
             RETURNING *
         ), pending AS (
             INSERT INTO tasks.results (task_id, name, priority, state, attempts, max_attempts, enqueued_at)
             SELECT callback_task_id, callback_name, callback_priority, 'pending', 0,
                    callback_max_attempts, now()
             FROM completed
         ) ",
        "SELECT (callback_headers->>'event_id')::uuid, callback_topic, callback_task_id::text,
                callback_value, callback_headers
         FROM completed",
        chords
    )
    .execute(conn)
    .await
    .context("enqueueing chord callbacks")?;
    Ok(())
}

/// The members of chord `chord_id`, by task id.
pub async fn of_chord(pool: &PgPool, chord_id: Uuid) -> anyhow::Result<Vec<TaskRow>> {
    Ok(sqlx::query_as!(
        TaskRow,
        "SELECT * FROM tasks.results WHERE chord_id = $1 ORDER BY task_id",
        chord_id
    )
    .fetch_all(pool)
    .await?)
}

/// A task's row, as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TaskRow {
    /// The task's id.
    pub task_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its queue.
    pub priority: String,
    /// pending, running, retrying, succeeded, failed or dead.
    pub state: String,
    /// Attempts started.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When its next attempt may start.
    pub due_at: Option<DateTime<Utc>>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its latest state after running.
    pub finished_at: Option<DateTime<Utc>>,
    /// What it returned.
    pub result: Option<serde_json::Value>,
    /// Why its latest attempt failed.
    pub error: Option<String>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// The chord it is a member of.
    pub chord_id: Option<Uuid>,
}

/// Task `task_id`'s row.
pub async fn get(pool: &PgPool, task_id: Uuid) -> anyhow::Result<Option<TaskRow>> {
    Ok(sqlx::query_as!(
        TaskRow,
        "SELECT * FROM tasks.results WHERE task_id = $1",
        task_id
    )
    .fetch_optional(pool)
    .await?)
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only in this state.
    pub state: Option<State>,
    /// Only of this task.
    pub name: Option<String>,
    /// Enqueued before this task (the next page: the last id of the previous one).
    pub before: Option<Uuid>,
    /// At most this many (newest first).
    pub limit: i64,
}

/// Tasks, newest first (task ids are UUIDv7: their order is the enqueue order).
pub async fn list(pool: &PgPool, filter: &Filter) -> anyhow::Result<Vec<TaskRow>> {
    Ok(sqlx::query_as!(
        TaskRow,
        "SELECT * FROM tasks.results
         WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR name = $2)
           AND ($3::uuid IS NULL OR task_id < $3)
         ORDER BY task_id DESC LIMIT $4",
        filter.state.map(State::as_str),
        filter.name.as_deref(),
        filter.before,
        filter.limit,
    )
    .fetch_all(pool)
    .await?)
}

/// How many tasks are in `state`.
pub async fn count_in_state(pool: &PgPool, state: State) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM tasks.results WHERE state = $1"#,
        state.as_str()
    )
    .fetch_one(pool)
    .await?)
}

/// Enqueue-to-start latency (`started_at − enqueued_at`) of the latest tasks, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StartLatency {
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The longest.
    pub max: f64,
}

/// The enqueue-to-start latency of the `latest` tasks enqueued last (by task
/// id); zeros when none has started.
pub async fn start_latency(pool: &PgPool, latest: i64) -> anyhow::Result<StartLatency> {
    let row = sqlx::query!(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                percentile_cont(0.9) WITHIN GROUP (ORDER BY ms) AS p90,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
                max(ms) AS max
         FROM (SELECT (extract(epoch FROM started_at - enqueued_at) * 1000)::float8 AS ms
               FROM tasks.results ORDER BY task_id DESC LIMIT $1) latest",
        latest
    )
    .fetch_one(pool)
    .await?;
    Ok(StartLatency {
        p50: row.p50.unwrap_or_default(),
        p90: row.p90.unwrap_or_default(),
        p99: row.p99.unwrap_or_default(),
        max: row.max.unwrap_or_default(),
    })
}

/// Longest error kept in a result row and a dead letter's `error` header.
pub const MAX_ERROR: usize = 2000;

/// `error` as stored: at most [`MAX_ERROR`] bytes, without NUL characters
/// (PostgreSQL text refuses them).
pub fn bounded(mut error: String) -> String {
    if error.contains('\0') {
        error = error.replace('\0', "");
    }
    if error.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
        error.push('…');
    }
    error
}

/// Lets a redriven task's row leave its final state (`failed`, `dead`), so
/// the redriven attempt's outcome is recorded.
pub async fn reopen(pool: &PgPool, task: &TaskHeaders) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE tasks.results SET state = 'retrying', attempts = least(attempts, $2), updated_at = now()
         WHERE task_id = $1 AND state IN ('failed', 'dead')",
        task.task_id,
        task.attempt as i32,
    )
    .execute(pool)
    .await?;
    Ok(())
}
