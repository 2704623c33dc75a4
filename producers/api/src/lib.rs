//! The api role: the command API's HTTP routes over the command side
//! (`tributary-commands`), with its settings. The binary serves these beside
//! the ingest endpoint, the task API and the webhook subscriptions API on
//! the same port.
//!
//! ```text
//! POST /customers           RegisterCustomer → 201, CustomerRegistered in the outbox
//! POST /orders              PlaceOrder       → 201, OrderPlaced in the outbox
//! POST /orders/{id}/cancel  CancelOrder      → 200, OrderCancelled in the outbox
//! PUT  /products/{sku}      the product catalog (admin)
//! ```
//!
//! Every command takes an optional `Idempotency-Key` header: a retry with the
//! same key and request gets the first response again (`Idempotent-Replayed:
//! true`) without a second effect; the same key with another request gets 422.

mod settings;

pub use settings::CommandApiSettings;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use serde::Serialize;
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};
use tributary_outbox::Causation;
use tributary_platform::{
    auth::{AuthSettings, Guard, Scope, require},
    http::{JsonBody, Problem, RequestContext, operations_routes, postgres_ready},
};
use uuid::Uuid;

use tributary_commands::{
    CommandError, Customers, Orders, ProductCatalog,
    catalog::{Product, ProductRequest},
    domain::{CancelOrderRequest, PlaceOrderRequest, RegisterCustomerRequest, Sku},
    idempotency::{Done, IdempotencyKey},
};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The order aggregate's handlers.
    pub orders: Orders,
    /// The customer aggregate's handlers.
    pub customers: Customers,
    /// The product catalog.
    pub catalog: ProductCatalog,
}

/// The command API's routes (bearer token with the `commands` scope), with
/// operations routes (open) and limits.
pub fn router(state: AppState, settings: &CommandApiSettings, auth: Arc<AuthSettings>) -> Router {
    let ready = postgres_ready(state.orders.pool().clone());
    // Changing the catalog is an administrator's job.
    let admin = Router::new()
        .route("/products/{sku}", put(put_product))
        .route_layer(from_fn_with_state(
            Guard::new(auth.clone(), Scope::Admin),
            require,
        ));
    Router::new()
        .route("/customers", post(register_customer))
        .route("/orders", post(place_order))
        .route("/orders/{order_id}/cancel", post(cancel_order))
        .route("/products", get(list_products))
        .route_layer(from_fn_with_state(
            Guard::new(auth, Scope::Commands),
            require,
        ))
        .merge(admin)
        .with_state(state)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .merge(operations_routes(ready))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
}

async fn register_customer(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<RegisterCustomerRequest>,
) -> Result<Response, Problem> {
    let customer = request.validate().map_err(|e| problem(e.into()))?;
    let key = idempotency_key(&headers, "POST /customers", &request)?;
    let done = state
        .customers
        .register(&customer, &causation(&headers), key.as_ref())
        .await
        .map_err(problem)?;
    let location = format!("/customers/{}", done.value.customer_id);
    Ok(respond(StatusCode::CREATED, Some(location), done))
}

async fn put_product(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    JsonBody(request): JsonBody<ProductRequest>,
) -> Result<Response, Problem> {
    let sku = Sku::parse(&sku).map_err(|reason| Problem::invalid_field("sku", reason))?;
    let name = request.validate().map_err(|e| problem(e.into()))?;
    let (product, created) = state
        .catalog
        .put(&sku, name)
        .await
        .map_err(|e| Problem::internal(&e.into()))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(product)).into_response())
}

/// Paging of `GET /products`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductPage {
    /// The last SKU of the previous page.
    after: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<i64>,
}

/// A page of products and the cursor of the next one.
#[derive(Debug, Serialize)]
struct Products {
    items: Vec<Product>,
    next_after: Option<String>,
}

async fn list_products(
    State(state): State<AppState>,
    page: Result<axum::extract::Query<ProductPage>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Products>, Problem> {
    let axum::extract::Query(page) =
        page.map_err(|rejection| Problem::invalid_field("query", rejection.body_text()))?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid_field(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let items = state
        .catalog
        .list(page.after.as_deref(), limit)
        .await
        .map_err(|e| Problem::internal(&e.into()))?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|p| p.sku.clone()))
        .flatten();
    Ok(Json(Products { items, next_after }))
}

async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<PlaceOrderRequest>,
) -> Result<Response, Problem> {
    let order = request.validate().map_err(|e| problem(e.into()))?;
    let key = idempotency_key(&headers, "POST /orders", &request)?;
    let done = state
        .orders
        .place(&order, &causation(&headers), key.as_ref())
        .await
        .map_err(problem)?;
    let location = format!("/orders/{}", done.value.order_id);
    Ok(respond(StatusCode::CREATED, Some(location), done))
}

async fn cancel_order(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CancelOrderRequest>,
) -> Result<Response, Problem> {
    let order_id = Uuid::parse_str(&order_id)
        .map_err(|_| Problem::invalid_field("order_id", "the path must hold the order's UUID"))?;
    let cancel = request.validate().map_err(|e| problem(e.into()))?;
    let key = idempotency_key(
        &headers,
        &format!("POST /orders/{order_id}/cancel"),
        &request,
    )?;
    let done = state
        .orders
        .cancel(order_id, &cancel, &causation(&headers), key.as_ref())
        .await
        .map_err(problem)?;
    Ok(respond(StatusCode::OK, None, done))
}

/// The response of a command; a replay says so in `Idempotent-Replayed`.
fn respond<T: Serialize>(status: StatusCode, location: Option<String>, done: Done<T>) -> Response {
    let mut response = (status, Json(done.value)).into_response();
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if done.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The `Idempotency-Key` header, bound to the command it came with.
fn idempotency_key(
    headers: &HeaderMap,
    command: &str,
    request: &impl Serialize,
) -> Result<Option<IdempotencyKey>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| Problem::invalid_field("Idempotency-Key", "must be visible ASCII"))?;
    let mut fingerprint = format!("{command}\n").into_bytes();
    serde_json::to_writer(&mut fingerprint, request).map_err(|e| Problem::internal(&e.into()))?;
    IdempotencyKey::parse(key, fingerprint)
        .map(Some)
        .map_err(|reason| Problem::invalid_field("Idempotency-Key", reason))
}

/// The command's own id, and the correlation and trace context it arrived with.
fn causation(headers: &HeaderMap) -> Causation {
    let context = RequestContext::from_headers(headers);
    Causation {
        correlation_id: context.correlation_id,
        causation_id: context.request_id,
        traceparent: Some(context.traceparent),
        producer: "tributary-api",
    }
}

/// The problem a refused command answers with.
fn problem(error: CommandError) -> Problem {
    {
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
            CommandError::StaleVersion { order_id, expected, current } => Problem::new(
                StatusCode::CONFLICT,
                "Stale version",
                format!("order {order_id} is at version {current}, not {expected}"),
            )
            .with_field("expected_version")
            .with("current_version", current),
            CommandError::EmailTaken { email, customer_id } => Problem::new(
                StatusCode::CONFLICT,
                "Already registered",
                format!("{email} is already registered"),
            )
            .with_field("email")
            .with("customer_id", customer_id.to_string()),
            CommandError::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency key reused",
                "this Idempotency-Key was used with a different request; use a new key for a new request",
            )
            .with_field("Idempotency-Key"),
            CommandError::UnknownSku { field, sku } => Problem::invalid_field(
                field,
                format!("{sku} is not in the product catalog (PUT /products/{{sku}} adds it)"),
            ),
            CommandError::Internal(error) => Problem::internal(&error),
        }
    }
}
