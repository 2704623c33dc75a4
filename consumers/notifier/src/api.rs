//! Webhook subscriptions over HTTP (scope `admin`):
//! `POST /webhooks/subscriptions`, `GET /webhooks/subscriptions`,
//! `GET|DELETE /webhooks/subscriptions/{id}`,
//! `POST /webhooks/subscriptions/{id}/rotate` (a new secret).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    middleware::from_fn_with_state,
    response::IntoResponse,
    routing::{get, post},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use tributary_platform::{
    auth::{AuthSettings, Guard, Scope, require},
    http::{JsonBody, Problem},
};
use uuid::Uuid;

use crate::subscriptions::{self, NewSubscription, Rotation, Subscription};

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
        .route(
            "/webhooks/subscriptions/{subscription_id}/rotate",
            post(rotate),
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
    Ok((StatusCode::CREATED, with_secret(&subscription, &secret)?))
}

/// A subscription with its secret: shown when it is made, never after.
fn with_secret(subscription: &Subscription, secret: &str) -> Result<Json<Value>, Problem> {
    let mut body = serde_json::to_value(subscription).map_err(anyhow::Error::from)?;
    body["secret"] = json!(secret);
    Ok(Json(body))
}

async fn rotate(
    State(state): State<Subscriptions>,
    Path(subscription_id): Path<String>,
    JsonBody(rotation): JsonBody<Rotation>,
) -> Result<impl IntoResponse, Problem> {
    let subscription_id = id(&subscription_id)?;
    rotation
        .validate()
        .map_err(|e| Problem::invalid_field(e.field, e.message))?;
    let (subscription, secret) = subscriptions::rotate(&state.pool, subscription_id, &rotation)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| Problem::not_found(format!("no subscription {subscription_id}")))?;
    with_secret(&subscription, &secret)
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
