//! What a task is: a name, an Avro record of arguments and an async body.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use apache_avro::{
    AvroSchema, Schema,
    reader::datum::{GenericDatumReader, SpecificDatumReader},
    writer::datum::GenericDatumWriter,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::{
    Priority,
    request::{ArgsError, Enqueue, EnqueueError},
    results::TaskRow,
};

/// A task the worker can run.
///
/// ```ignore
/// #[derive(Serialize, Deserialize, AvroSchema)]
/// #[avro(namespace = "shop.tasks")]
/// struct SendInvoice { order_id: String }
///
/// struct SendInvoiceTask;
/// impl Task for SendInvoiceTask {
///     const NAME: &'static str = "shop.send_invoice";
///     type Args = SendInvoice;
///     async fn run(&self, ctx: TaskContext, args: SendInvoice) -> Result<serde_json::Value, TaskError> { ... }
/// }
/// ```
///
/// Delivery is at-least-once: `run` must be idempotent (key its side
/// effects by `ctx.task_id`).
pub trait Task: Send + Sync + 'static {
    /// The task's name, as enqueued (`shop.send_invoice`).
    const NAME: &'static str;
    /// Its arguments: an Avro record, registered in the schema registry.
    type Args: Serialize + DeserializeOwned + AvroSchema + Send + Sync + 'static;

    /// One attempt. `Ok` is stored as the task's result; [`TaskError::Retry`]
    /// tries again after a backoff while attempts remain;
    /// [`TaskError::Permanent`] fails the task at once.
    fn run(
        &self,
        ctx: TaskContext,
        args: Self::Args,
    ) -> impl Future<Output = Result<serde_json::Value, TaskError>> + Send;
}

/// Why an attempt did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Worth another attempt (a timeout, a service unavailable).
    #[error("{0:#}")]
    Retry(anyhow::Error),
    /// Will never succeed (bad arguments, a refused request): no retry.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl From<anyhow::Error> for TaskError {
    fn from(error: anyhow::Error) -> Self {
        TaskError::Retry(error)
    }
}

/// What an attempt knows about itself.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's id, the same for every attempt: the idempotency key of its side effects.
    pub task_id: Uuid,
    /// The task's name.
    pub name: String,
    /// Its queue.
    pub priority: Priority,
    /// This attempt (1 for the first).
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// The chord this task is a member of.
    pub chord_id: Option<Uuid>,
    /// The chord whose callback this task is: its members' results are in
    /// [`TaskContext::chord_results`].
    pub callback_of: Option<Uuid>,
    /// What a running task may use to start subtasks (absent in unit tests).
    pub runtime: Option<Arc<dyn TaskRuntime>>,
}

/// What a running task may ask of the task system besides its arguments:
/// chords. The worker gives each task one (`enqueue::runtime`).
pub trait TaskRuntime: Send + Sync + std::fmt::Debug {
    /// Starts a chord for task `parent` (see [`TaskContext::chord`]).
    fn start_chord<'a>(
        &'a self,
        parent: Uuid,
        subtasks: &'a [Enqueue],
        callback: &'a Enqueue,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<Uuid>> + Send + 'a>>;

    /// The members of chord `chord_id`, by task id.
    fn chord_results(
        &self,
        chord_id: Uuid,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<TaskRow>>> + Send + '_>>;
}

impl TaskContext {
    /// Starts a chord: `subtasks`, then `callback` once every one of them
    /// has finished (succeeded, failed or dead). All of it is enqueued in
    /// one transaction, and once per task: a retried or re-delivered parent
    /// finds its chord started and enqueues nothing again. Returns the
    /// chord's id.
    pub async fn chord(&self, subtasks: Vec<Enqueue>, callback: Enqueue) -> anyhow::Result<Uuid> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no task runtime here"))?;
        runtime
            .start_chord(self.task_id, &subtasks, &callback)
            .await
    }

    /// The results of the chord this task is the callback of, by task id.
    pub async fn chord_results(&self) -> anyhow::Result<Vec<TaskRow>> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no task runtime here"))?;
        let chord_id = self
            .callback_of
            .ok_or_else(|| anyhow::anyhow!("{} is not a chord's callback", self.task_id))?;
        runtime.chord_results(chord_id).await
    }
}

/// The built-in task that does nothing: health checks and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Noop;

/// [`Noop`]'s arguments: none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "tributary.tasks")]
pub struct NoopArgs {}

impl Task for Noop {
    const NAME: &'static str = "tributary.noop";
    type Args = NoopArgs;

    async fn run(&self, _: TaskContext, _: NoopArgs) -> Result<serde_json::Value, TaskError> {
        Ok(serde_json::Value::Null)
    }
}

/// The built-in task that waits: deployment drills and load tests.
#[derive(Debug, Clone, Copy)]
pub struct Sleep;

/// [`Sleep`]'s arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "tributary.tasks")]
pub struct SleepArgs {
    /// How long to wait, in milliseconds (at most an hour).
    pub ms: i64,
}

impl Task for Sleep {
    const NAME: &'static str = "tributary.sleep";
    type Args = SleepArgs;

    async fn run(&self, _: TaskContext, args: SleepArgs) -> Result<serde_json::Value, TaskError> {
        if !(0..=3_600_000).contains(&args.ms) {
            return Err(TaskError::Permanent(anyhow::anyhow!(
                "ms must be between 0 and 3600000"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(args.ms as u64)).await;
        Ok(serde_json::json!({ "slept_ms": args.ms }))
    }
}

/// A boxed attempt.
/// A running attempt of a task: what it returned, or why it failed.
pub type Attempt<'a> =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, TaskError>> + Send + 'a>>;

/// A task with its argument type erased.
/// A task of the catalog, type-erased: the worker runs tasks through it.
pub trait Runner: Send + Sync {
    /// The arguments' schema.
    fn schema(&self) -> &Schema;
    /// Decodes the arguments (resolving from `writer` when they were written
    /// with another version of the record) and runs one attempt.
    fn run<'a>(&'a self, ctx: TaskContext, writer: Option<&Schema>, datum: &[u8]) -> Attempt<'a>;
}

struct Typed<T: Task> {
    task: T,
    schema: Schema,
    reader: SpecificDatumReader<T::Args>,
}

impl<T: Task> Typed<T> {
    fn decode(&self, writer: Option<&Schema>, mut datum: &[u8]) -> anyhow::Result<T::Args> {
        let args = match writer {
            None => self.reader.read(&mut datum)?,
            Some(writer) => {
                let value = GenericDatumReader::builder(writer)
                    .reader_schema(&self.schema)
                    .build()?
                    .read_value(&mut datum)?;
                apache_avro::from_value(&value)?
            }
        };
        anyhow::ensure!(
            datum.is_empty(),
            "{} bytes after the arguments",
            datum.len()
        );
        Ok(args)
    }
}

impl<T: Task> Runner for Typed<T> {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn run<'a>(&'a self, ctx: TaskContext, writer: Option<&Schema>, datum: &[u8]) -> Attempt<'a> {
        match self.decode(writer, datum) {
            Ok(args) => Box::pin(self.task.run(ctx, args)),
            Err(error) => Box::pin(async move {
                Err(TaskError::Permanent(
                    error.context("decoding the arguments"),
                ))
            }),
        }
    }
}

/// Every task a process knows, by name.
#[derive(Clone, Default)]
pub struct Catalog {
    tasks: BTreeMap<String, Arc<dyn Runner>>,
    json: BTreeMap<String, Arc<JsonEncoder>>,
}

type JsonEncoder = dyn Fn(&[u8]) -> Result<Vec<u8>, ArgsError> + Send + Sync;

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tasks.keys()).finish()
    }
}

impl Catalog {
    /// A catalog with the built-in [`Noop`] and [`Sleep`].
    pub fn new() -> Self {
        Self::default().with(Noop).with(Sleep)
    }

    /// Adds `task` under [`Task::NAME`] (replacing a task of that name).
    pub fn with<T: Task>(mut self, task: T) -> Self {
        let reader = SpecificDatumReader::<T::Args>::builder()
            .build()
            .expect("a derived schema resolves");
        let typed = Arc::new(Typed {
            task,
            schema: T::Args::get_schema(),
            reader,
        });
        self.tasks.insert(T::NAME.to_owned(), typed);
        let schema = T::Args::get_schema();
        self.json.insert(
            T::NAME.to_owned(),
            Arc::new(move |json: &[u8]| {
                refuse_unknown_fields(&schema, json)?;
                // The API's own JSON reading names the field; here it sits under `args`.
                let args: T::Args =
                    tributary_platform::http::parse_json(json).map_err(|problem| {
                        ArgsError::Field {
                            field: match problem.field.as_deref() {
                                None | Some("") => "args".to_owned(),
                                Some(field) => format!("args.{field}"),
                            },
                            message: problem.detail,
                        }
                    })?;
                Ok(encode_args(&schema, &args)?)
            }),
        );
        self
    }

    /// The names of every task, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// Whether the catalog knows `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tasks.contains_key(name)
    }

    /// The arguments' schema of task `name`.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.tasks.get(name).map(|runner| runner.schema())
    }

    /// Arguments given as JSON (`{"order_id": "…"}`), as an Avro datum of
    /// task `name`'s record; `None` for a task the catalog does not know.
    pub fn encode_json(&self, name: &str, json: &[u8]) -> Option<Result<Vec<u8>, ArgsError>> {
        self.json.get(name).map(|encode| encode(json))
    }

    /// The runner of task `name`.
    pub fn runner(&self, name: &str) -> Option<&Arc<dyn Runner>> {
        self.tasks.get(name)
    }
}

/// A task's arguments as an Avro datum of `schema`.
pub fn encode_args<A: Serialize>(schema: &Schema, args: &A) -> Result<Vec<u8>, apache_avro::Error> {
    GenericDatumWriter::builder(schema)
        .build()?
        .write_ser_to_vec(args)
}

/// Refuses a top-level key the record does not have (serde would ignore it).
fn refuse_unknown_fields(schema: &Schema, json: &[u8]) -> Result<(), ArgsError> {
    let (Schema::Record(record), Ok(serde_json::Value::Object(object))) =
        (schema, serde_json::from_slice::<serde_json::Value>(json))
    else {
        return Ok(());
    };
    match object
        .keys()
        .find(|key| !record.fields.iter().any(|field| &field.name == *key))
    {
        Some(key) => Err(ArgsError::Field {
            field: format!("args.{key}"),
            message: format!("unknown field `{key}`"),
        }),
        None => Ok(()),
    }
}

impl Enqueue {
    /// Task `T` with `args`, on `tasks.default`, due now.
    pub fn new<T: Task>(args: &T::Args) -> anyhow::Result<Self> {
        let schema = <T::Args as apache_avro::AvroSchema>::get_schema();
        let args =
            anyhow::Context::context(encode_args(&schema, args), "encoding the task's arguments")?;
        Ok(Self::raw(T::NAME, args))
    }

    /// Task `name` with arguments given as JSON, checked against the catalog.
    pub fn json(catalog: &Catalog, name: &str, args: &[u8]) -> Result<Self, EnqueueError> {
        let args = catalog
            .encode_json(name, args)
            .ok_or_else(|| EnqueueError::UnknownTask(name.to_owned()))??;
        Ok(Self::raw(name, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, AvroSchema, PartialEq)]
    #[avro(namespace = "test.tasks")]
    struct Greet {
        name: String,
        times: i32,
    }

    struct GreetTask;

    impl Task for GreetTask {
        const NAME: &'static str = "test.greet";
        type Args = Greet;

        async fn run(&self, _: TaskContext, args: Greet) -> Result<serde_json::Value, TaskError> {
            Ok(serde_json::json!(
                format!("hello {}", args.name).repeat(args.times as usize)
            ))
        }
    }

    fn ctx() -> TaskContext {
        TaskContext {
            task_id: Uuid::now_v7(),
            name: GreetTask::NAME.into(),
            priority: Priority::Default,
            attempt: 1,
            max_attempts: 1,
            chord_id: None,
            callback_of: None,
            runtime: None,
        }
    }

    #[tokio::test]
    async fn json_arguments_become_avro_and_run() {
        let catalog = Catalog::new().with(GreetTask);
        let datum = catalog
            .encode_json("test.greet", br#"{"name": "Ada", "times": 2}"#)
            .unwrap()
            .unwrap();
        let result = catalog
            .runner("test.greet")
            .unwrap()
            .run(ctx(), None, &datum)
            .await
            .unwrap();
        assert_eq!(result, serde_json::json!("hello Adahello Ada"));
        assert!(catalog.encode_json("test.unknown", b"{}").is_none());
        assert_eq!(
            catalog.names().collect::<Vec<_>>(),
            ["test.greet", "tributary.noop", "tributary.sleep"]
        );
    }

    #[test]
    fn bad_json_arguments_name_the_field() {
        let catalog = Catalog::new().with(GreetTask);
        let error = catalog
            .encode_json("test.greet", br#"{"name": "Ada"}"#)
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&error, ArgsError::Field { field, .. } if field == "args.times"),
            "{error:?}"
        );
        let error = catalog
            .encode_json("test.greet", br#"{"name": 3, "times": 1}"#)
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&error, ArgsError::Field { field, .. } if field == "args.name"),
            "{error:?}"
        );
        let error = catalog
            .encode_json(
                "test.greet",
                br#"{"name": "Ada", "times": 1, "tone": "warm"}"#,
            )
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&error, ArgsError::Field { field, .. } if field == "args.tone"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn undecodable_arguments_fail_the_task_for_good() {
        let catalog = Catalog::new().with(GreetTask);
        let outcome = catalog
            .runner("test.greet")
            .unwrap()
            .run(ctx(), None, &[0xff, 0xff])
            .await;
        assert!(
            matches!(outcome, Err(TaskError::Permanent(_))),
            "{outcome:?}"
        );
    }
}
