//! HTTP routes of the command API.

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};
use tributary_platform::http::{JsonBody, Problem, operations_routes, postgres_ready};
use uuid::Uuid;

use crate::{
    CommandApiSettings, CommandError, Orders,
    domain::{CancelOrderRequest, PlaceOrderRequest},
    outbox::Causation,
};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The order aggregate's handlers.
    pub orders: Orders,
}

/// The command API's routes, with operations routes and limits.
pub fn router(state: AppState, settings: &CommandApiSettings) -> Router {
    let ready = postgres_ready(state.orders.pool().clone());
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{order_id}/cancel", post(cancel_order))
        .with_state(state)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .merge(operations_routes(ready))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
}

async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<PlaceOrderRequest>,
) -> Result<Response, Problem> {
    let order = request.validate().map_err(CommandError::from)?;
    let accepted = state.orders.place(&order, &causation(&headers)).await?;
    let location = format!("/orders/{}", accepted.order_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(accepted),
    )
        .into_response())
}

async fn cancel_order(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CancelOrderRequest>,
) -> Result<Json<crate::OrderAccepted>, Problem> {
    let order_id = Uuid::parse_str(&order_id)
        .map_err(|_| Problem::invalid_field("order_id", "the path must hold the order's UUID"))?;
    let reason = request.validate().map_err(CommandError::from)?;
    Ok(Json(
        state
            .orders
            .cancel(order_id, reason, &causation(&headers))
            .await?,
    ))
}

/// The command's own id, and the correlation and trace context it arrived with.
fn causation(headers: &HeaderMap) -> Causation {
    let header_uuid = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::parse_str(v).ok())
    };
    let command_id = header_uuid("x-request-id").unwrap_or_else(Uuid::now_v7);
    Causation {
        correlation_id: header_uuid("x-correlation-id").unwrap_or(command_id),
        causation_id: command_id,
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_owned),
        producer: "tributary-api",
    }
}

impl From<CommandError> for Problem {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Invalid(invalid) => Problem::invalid_field(invalid.field, invalid.reason),
            CommandError::NotFound(id) => Problem::not_found(format!("order {id} does not exist")),
            CommandError::IllegalTransition {
                order_id,
                current,
                wanted,
            } => Problem::new(
                StatusCode::CONFLICT,
                "Illegal transition",
                format!("order {order_id} is {current}: it cannot become {wanted}"),
            )
            .with("current_status", current.as_str())
            .with("order_id", order_id.to_string()),
            CommandError::Internal(error) => Problem::internal(&error),
        }
    }
}
