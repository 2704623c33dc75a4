//! The task API: `POST /tasks` (scope `commands`), `GET /tasks` and
//! `GET /tasks/{id}` (scope `query`).

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    middleware::from_fn_with_state,
    response::IntoResponse,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use tributary_platform::{
    auth::{AuthSettings, Guard, Scope, require},
    http::{JsonBody, Problem},
};
use uuid::Uuid;

use crate::{
    Enqueue, Enqueuer, Priority,
    request::ArgsError,
    request::EnqueueError,
    results::{self, Filter, State as TaskState},
};

/// What the task routes share.
#[derive(Debug, Clone)]
struct Tasks {
    pool: PgPool,
    enqueuer: Enqueuer,
}

/// The task routes, guarded by scope.
pub fn router(pool: PgPool, enqueuer: Enqueuer, auth: Arc<AuthSettings>) -> Router {
    let state = Tasks { pool, enqueuer };
    let enqueue = Router::new()
        .route("/tasks", post(enqueue))
        .route_layer(from_fn_with_state(
            Guard::new(auth.clone(), Scope::Commands),
            require,
        ));
    let read = Router::new()
        .route("/tasks", get(list))
        .route("/tasks/{task_id}", get(show))
        .route_layer(from_fn_with_state(Guard::new(auth, Scope::Query), require));
    enqueue.merge(read).with_state(state)
}

/// `POST /tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    /// The task's name.
    task: String,
    /// Its arguments, as JSON fitting its Avro record.
    #[serde(default)]
    args: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    priority: Priority,
    /// Not before this long from now (`30s`, `5m`).
    #[serde(default, with = "humantime_serde")]
    countdown: Option<Duration>,
    /// Not before this time (RFC 3339).
    #[serde(default)]
    eta: Option<DateTime<Utc>>,
    #[serde(default)]
    max_attempts: Option<u32>,
    /// Per attempt (`30s`).
    #[serde(default, with = "humantime_serde")]
    time_limit: Option<Duration>,
}

async fn enqueue(
    State(tasks): State<Tasks>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<EnqueueBody>,
) -> Result<impl IntoResponse, Problem> {
    let args = serde_json::to_vec(&body.args).map_err(anyhow::Error::from)?;
    let mut request =
        Enqueue::json(tasks.enqueuer.catalog(), &body.task, &args).map_err(problem)?;
    request.priority = body.priority;
    request = match (body.countdown, body.eta) {
        (Some(_), Some(_)) => {
            return Err(Problem::invalid_field(
                "eta",
                "give a countdown or an ETA, not both",
            ));
        }
        (Some(countdown), None) => request.countdown(countdown),
        (None, Some(eta)) => request.eta(eta),
        (None, None) => request,
    };
    request.max_attempts = body.max_attempts;
    request.time_limit = body.time_limit;
    request.correlation_id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let task_id = tasks
        .enqueuer
        .enqueue(&tasks.pool, &request)
        .await
        .map_err(problem)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "task_id": task_id,
            "task": request.task,
            "priority": request.priority,
            "state": "pending",
            "due_at": request.due_at,
        })),
    ))
}

fn problem(error: EnqueueError) -> Problem {
    match error {
        EnqueueError::UnknownTask(_) => Problem::invalid_field("task", error.to_string()),
        EnqueueError::Args(ArgsError::Field { field, message }) => {
            Problem::invalid_field(field, message)
        }
        EnqueueError::Args(error @ ArgsError::Schema(_)) => {
            Problem::invalid_field("args", error.to_string())
        }
        EnqueueError::Invalid { field, message } => Problem::invalid_field(field, message),
        EnqueueError::Unavailable(error) => Problem::internal(&error),
    }
}

async fn show(
    State(tasks): State<Tasks>,
    Path(task_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let task_id: Uuid = task_id
        .parse()
        .map_err(|_| Problem::invalid_field("task_id", "not a UUID"))?;
    let row = results::get(&tasks.pool, task_id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no task {task_id}")))?;
    Ok(Json(row))
}

/// `GET /tasks` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    task: Option<String>,
    before: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(tasks): State<Tasks>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, Problem> {
    let Query(query) = query.map_err(|rejection| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "Invalid query",
            rejection.body_text(),
        )
    })?;
    let state = query
        .state
        .map(|s| s.parse::<TaskState>())
        .transpose()
        .map_err(|e| Problem::invalid_field("state", e))?;
    let before = query
        .before
        .map(|s| s.parse::<Uuid>())
        .transpose()
        .map_err(|_| Problem::invalid_field("before", "not a task id"))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid_field(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let rows = results::list(
        &tasks.pool,
        &Filter {
            state,
            name: query.task,
            before,
            limit,
        },
    )
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|row| row.task_id))
        .flatten();
    Ok(Json(json!({ "tasks": rows, "next": next })))
}
