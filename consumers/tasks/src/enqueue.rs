//! Enqueueing: inside the caller's transaction through the outbox, or
//! straight to Kafka.
//!
//! [`Enqueuer::enqueue_in`] writes the task message to the outbox (`tributary-outbox`)
//! and a `pending` row to `tasks.results` in the caller's transaction: the
//! task exists exactly when the change that asked for it commits, and the
//! relay publishes it (in order, at least once). A countdown or an ETA sends
//! the message to a delay topic first.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::Utc;
use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sqlx::PgConnection;
use tributary_outbox::OutboxRecord;
use tributary_registry::RegistryClient;
use tributary_schemas::framing;
use uuid::Uuid;

use crate::{
    Catalog, Priority, TaskSettings,
    request::{Enqueue, EnqueueError},
    wire::{self, TaskHeaders},
};

/// A task message ready to go: where, with what key, value and headers.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The task's id.
    pub task_id: Uuid,
    /// Its topic: the queue, or a delay topic while it waits.
    pub topic: String,
    /// The task id as text.
    pub key: String,
    /// The framed arguments.
    pub value: Vec<u8>,
    /// Every header.
    pub headers: Vec<(String, String)>,
    /// What the message says about the task.
    pub task: TaskHeaders,
}

/// Enqueues the tasks of a [`Catalog`] whose argument schemas it registered.
#[derive(Clone)]
pub struct Enqueuer {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    /// Each task's arguments' schema id.
    ids: HashMap<String, u32>,
    topic_prefix: String,
    settings: TaskSettings,
    producer: FutureProducer,
}

impl std::fmt::Debug for Enqueuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueuer")
            .field("tasks", &self.inner.catalog)
            .finish_non_exhaustive()
    }
}

impl Enqueuer {
    /// Registers every task's arguments schema under each queue's subject
    /// (`<prefix>tasks.<priority>-<record>`) and returns an enqueuer that
    /// produces with `producer_config` (see `KafkaSettings::producer_config`).
    pub async fn register(
        catalog: Catalog,
        registry: &RegistryClient,
        topic_prefix: &str,
        settings: TaskSettings,
        producer_config: &ClientConfig,
    ) -> anyhow::Result<Self> {
        let mut ids = HashMap::new();
        for name in catalog.names() {
            let schema = catalog.schema(name).expect("a listed task has a schema");
            let full_name = schema
                .name()
                .map(|n| n.fullname(None))
                .with_context(|| format!("task {name}'s arguments are not a record"))?;
            let mut id = None;
            for priority in Priority::ALL {
                let subject = tributary_schemas::subject(
                    &format!("{topic_prefix}{}", priority.topic()),
                    &full_name,
                );
                let registered = registry
                    .register(&subject, &serde_json::to_string(schema)?)
                    .await
                    .with_context(|| format!("registering {subject}"))?;
                id.get_or_insert(registered);
            }
            ids.insert(name.to_owned(), id.expect("three queues"));
        }
        let producer = producer_config
            .create()
            .context("creating the task producer")?;
        Ok(Self {
            inner: Arc::new(Inner {
                catalog,
                ids,
                topic_prefix: topic_prefix.to_owned(),
                settings,
                producer,
            }),
        })
    }

    /// The catalog it enqueues from.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The registered schema id of task `name`'s arguments.
    pub fn schema_id(&self, name: &str) -> Option<u32> {
        self.inner.ids.get(name).copied()
    }

    /// A deployed topic name.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.inner.topic_prefix)
    }

    /// The message of a new task, first attempt.
    pub fn message(&self, request: &Enqueue) -> Result<Outgoing, EnqueueError> {
        let schema_id = self
            .schema_id(&request.task)
            .ok_or_else(|| EnqueueError::UnknownTask(request.task.clone()))?;
        let settings = &self.inner.settings;
        let max_attempts = request.max_attempts.unwrap_or(settings.max_attempts);
        if !(1..=wire::MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(EnqueueError::Invalid {
                field: "max_attempts",
                message: format!("must be between 1 and {}", wire::MAX_ATTEMPTS),
            });
        }
        let time_limit = request.time_limit.unwrap_or(settings.time_limit);
        if time_limit.is_zero() || time_limit > wire::MAX_TIME_LIMIT {
            return Err(EnqueueError::Invalid {
                field: "time_limit",
                message: "must be more than 0 and at most 24 hours".into(),
            });
        }
        if let Some(due_at) = request.due_at
            && due_at > Utc::now() + wire::MAX_DELAY
        {
            return Err(EnqueueError::Invalid {
                field: if request.countdown_given {
                    "countdown"
                } else {
                    "eta"
                },
                message: "must be at most 366 days ahead".into(),
            });
        }
        let task = TaskHeaders {
            task_id: Uuid::now_v7(),
            task: request.task.clone(),
            priority: request.priority,
            attempt: 1,
            max_attempts,
            time_limit,
            enqueued_at: Utc::now(),
            due_at: request.due_at,
            chord_id: None,
            callback_of: None,
        };
        let mut outgoing =
            self.outgoing(task, framing::frame(schema_id, &request.args), Vec::new());
        if let Some(correlation_id) = &request.correlation_id {
            outgoing
                .headers
                .push(("correlation_id".into(), correlation_id.clone()));
        }
        Ok(outgoing)
    }

    /// A message for `task` (any attempt) with the framed arguments `value`:
    /// to its queue when due, else to the delay topic its wait fits.
    /// The message of `task` (its headers) with `value`, carrying `carried`
    /// headers on: a retry or a delayed task moving on.
    pub fn outgoing(
        &self,
        task: TaskHeaders,
        value: Vec<u8>,
        carried: Vec<(String, String)>,
    ) -> Outgoing {
        let now = Utc::now();
        let topic = match task.due_at.filter(|due| *due > now) {
            Some(due) => {
                let wait = (due - now).to_std().unwrap_or_default();
                self.topic(&wire::delay_topic(
                    self.inner.settings.group(),
                    wire::delay_for(wait),
                ))
            }
            None => self.topic(&task.priority.topic()),
        };
        let mut headers: Vec<(String, String)> = task
            .pairs()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        headers.push(("event_id".into(), Uuid::now_v7().to_string()));
        headers.push(("producer".into(), "tributary-tasks".to_owned()));
        headers.extend(carried);
        Outgoing {
            task_id: task.task_id,
            topic,
            key: task.task_id.to_string(),
            value,
            headers,
            task,
        }
    }

    /// Enqueues inside the caller's transaction: the outbox row and the
    /// `pending` result commit with the caller's change, or not at all.
    pub async fn enqueue_in(
        &self,
        conn: &mut PgConnection,
        request: &Enqueue,
    ) -> Result<Uuid, EnqueueError> {
        let message = self.message(request)?;
        insert(conn, &message).await?;
        Ok(message.task_id)
    }

    /// Enqueues on its own (one transaction of its own): what `POST /tasks`
    /// and `tributary ctl task enqueue` call.
    pub async fn enqueue(
        &self,
        pool: &sqlx::PgPool,
        request: &Enqueue,
    ) -> Result<Uuid, EnqueueError> {
        let mut tx = pool.begin().await.map_err(anyhow::Error::from)?;
        let task_id = self.enqueue_in(&mut tx, request).await?;
        tx.commit()
            .await
            .map_err(|error| anyhow::Error::from(error).context("committing the enqueue"))?;
        Ok(task_id)
    }

    /// Starts a chord for `parent` (see [`crate::TaskContext::chord`]).
    pub async fn start_chord(
        &self,
        pool: &sqlx::PgPool,
        parent: Uuid,
        subtasks: &[Enqueue],
        callback: &Enqueue,
    ) -> anyhow::Result<Uuid> {
        // One chord per parent task, whichever attempt starts it.
        let chord_id = Uuid::new_v5(&parent, b"chord");
        let mut callback = self
            .message(callback)
            .map_err(|e| anyhow::anyhow!("the callback: {e}"))?;
        callback.task.callback_of = Some(chord_id);
        let callback = self.outgoing(
            callback.task,
            callback.value,
            carried_only(&callback.headers),
        );
        let mut members = Vec::with_capacity(subtasks.len());
        for (i, subtask) in subtasks.iter().enumerate() {
            let mut member = self
                .message(subtask)
                .map_err(|e| anyhow::anyhow!("subtask {i}: {e}"))?;
            member.task.chord_id = Some(chord_id);
            members.push(self.outgoing(member.task, member.value, carried_only(&member.headers)));
        }
        let mut tx = pool.begin().await?;
        let started: Option<Uuid> = sqlx::query_scalar!(
        "INSERT INTO tasks.chords (chord_id, parent_task_id, total, callback_task_id, callback_name,
                                       callback_priority, callback_max_attempts, callback_topic,
                                       callback_value, callback_headers)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (chord_id) DO NOTHING RETURNING chord_id",
        chord_id,
        parent,
        members.len() as i32,
        callback.task_id,
        &callback.task.task,
        callback.task.priority.as_str(),
        callback.task.max_attempts as i32,
        &callback.topic,
        &callback.value,
        headers_json(&callback.headers)
    )
        .fetch_optional(&mut *tx)
        .await
        .context("recording the chord")?;
        if started.is_none() {
            // A retried or re-delivered parent: its chord is under way.
            let row = sqlx::query!(
                "SELECT total, callback_name FROM tasks.chords WHERE chord_id = $1",
                chord_id
            )
            .fetch_one(&mut *tx)
            .await?;
            let (total, callback_name) = (row.total, row.callback_name);
            anyhow::ensure!(
                total as usize == members.len() && callback_name == callback.task.task,
                "task {parent} already started a chord ({total} subtasks, then {callback_name}): one chord per task"
            );
            return Ok(chord_id);
        }
        for member in &members {
            insert(&mut tx, member).await?;
        }
        if members.is_empty() {
            crate::results::complete_chords(&mut tx, &[chord_id]).await?;
        }
        tx.commit().await?;
        Ok(chord_id)
    }
    /// Enqueues straight to Kafka and waits for the broker to have it (no
    /// `pending` row: the worker writes the task's row when it starts it).
    pub async fn produce(&self, request: &Enqueue) -> Result<Uuid, EnqueueError> {
        let message = self.message(request)?;
        self.send(&message).await?;
        Ok(message.task_id)
    }

    /// Produces `message` and waits for the acknowledgement.
    /// Produces `message` straight to Kafka and waits for the broker.
    pub async fn send(&self, message: &Outgoing) -> anyhow::Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        let record = FutureRecord::to(&message.topic)
            .key(&message.key)
            .payload(&message.value)
            .headers(headers);
        self.inner
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)
            .with_context(|| format!("producing task {} to {}", message.task_id, message.topic))?;
        Ok(())
    }
}

/// Headers other than the task's own, `event_id` and `producer`.
fn carried_only(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            !TaskHeaders::NAMES.contains(&name.as_str()) && name != "event_id" && name != "producer"
        })
        .cloned()
        .collect()
}

/// The headers as a JSON object, as the outbox stores them.
pub(crate) fn headers_json(headers: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Object(
        headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone().into()))
            .collect(),
    )
}

/// Writes `message` to the outbox with its task's `pending` row.
pub(crate) async fn insert(conn: &mut PgConnection, message: &Outgoing) -> anyhow::Result<()> {
    let event_id: Uuid = message
        .headers
        .iter()
        .find(|(name, _)| name == "event_id")
        .and_then(|(_, id)| id.parse().ok())
        .context("a task message without an event id")?;
    OutboxRecord::message(
        event_id,
        &message.topic,
        &message.key,
        &message.value,
        message.headers.iter().cloned(),
    )
    .append(&mut *conn)
    .await
    .context("writing the task to the outbox")?;
    crate::results::insert_pending(conn, &message.task).await
}

/// The runtime the worker gives each task: chords start through `enqueuer`
/// in `pool`, and read their members' rows there.
pub fn runtime(pool: sqlx::PgPool, enqueuer: Enqueuer) -> Arc<dyn crate::TaskRuntime> {
    Arc::new(Runtime { pool, enqueuer })
}

#[derive(Debug)]
struct Runtime {
    pool: sqlx::PgPool,
    enqueuer: Enqueuer,
}

impl crate::TaskRuntime for Runtime {
    fn start_chord<'a>(
        &'a self,
        parent: Uuid,
        subtasks: &'a [Enqueue],
        callback: &'a Enqueue,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Uuid>> + Send + 'a>>
    {
        Box::pin(
            self.enqueuer
                .start_chord(&self.pool, parent, subtasks, callback),
        )
    }

    fn chord_results(
        &self,
        chord_id: Uuid,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = anyhow::Result<Vec<crate::results::TaskRow>>>
                + Send
                + '_,
        >,
    > {
        Box::pin(crate::results::of_chord(&self.pool, chord_id))
    }
}
