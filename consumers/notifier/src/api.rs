//! Webhook subscriptions over HTTP (scope `admin`):
//! `POST /webhooks/subscriptions`, `GET /webhooks/subscriptions`,
//! `GET|DELETE /webhooks/subscriptions/{id}`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    middleware::from_fn_with_state,
    response::IntoResponse,
    routing::get,
};
use serde_json::json;
use sqlx::PgPool;
use tributary_platform::{
    auth::{AuthSettings, Guard, Scope, require},
    http::{JsonBody, Problem},
};
use uuid::Uuid;

use crate::subscriptions::{self, NewSubscription};

#[derive(Debug, Clone)]
struct Subscriptions {
    pool: PgPool,
    allow_private: bool,
}

/// The subscription routes; `allow_private` lets URLs name private addresses.
pub fn router(pool: PgPool, allow_private: bool, auth: Arc<AuthSettings>) -> Router {
    Router::new()
        .route("/webhooks/subscriptions", get(list).post(create))
        .route(
            "/webhooks/subscriptions/{subscription_id}",
            get(show).delete(remove),
        )
        .route_layer(from_fn_with_state(Guard::new(auth, Scope::Admin), require))
        .with_state(Subscriptions {
            pool,
            allow_private,
        })
}

async fn create(
    State(state): State<Subscriptions>,
    JsonBody(new): JsonBody<NewSubscription>,
) -> Result<impl IntoResponse, Problem> {
    new.validate(state.allow_private)
        .map_err(|e| Problem::invalid_field(e.field, e.message))?;
    let (subscription, secret) = subscriptions::create(&state.pool, &new)
        .await
        .map_err(anyhow::Error::from)?;
    let mut body = serde_json::to_value(&subscription).map_err(anyhow::Error::from)?;
    body["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list(State(state): State<Subscriptions>) -> Result<impl IntoResponse, Problem> {
    let all = subscriptions::list(&state.pool)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(Json(json!({ "subscriptions": all })))
}

fn id(text: &str) -> Result<Uuid, Problem> {
    text.parse()
        .map_err(|_| Problem::invalid_field("subscription_id", "not a UUID"))
}

async fn show(
    State(state): State<Subscriptions>,
    Path(subscription_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let subscription_id = id(&subscription_id)?;
    let found = subscriptions::get(&state.pool, subscription_id)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| Problem::not_found(format!("no subscription {subscription_id}")))?;
    Ok(Json(found))
}

async fn remove(
    State(state): State<Subscriptions>,
    Path(subscription_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let subscription_id = id(&subscription_id)?;
    if subscriptions::delete(&state.pool, subscription_id)
        .await
        .map_err(anyhow::Error::from)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "no subscription {subscription_id}"
        )))
    }
}
