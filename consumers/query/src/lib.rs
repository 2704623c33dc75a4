//! The query API: HTTP reads over the read models (`read_model` schema), for
//! analysts. Every list is served by one generic handler driven by a
//! descriptor of the read model (see [`model::MODELS`]): filters, `from`/`to`
//! on the model's time column, `sort=[-]column`, keyset paging with an
//! opaque cursor, and CSV exports streamed from PostgreSQL.
//!
//! ```text
//! GET /orders                      orders (filters status, customer_id, currency; from/to on placed_at)
//! GET /orders/{order_id}           one order
//! GET /orders/{order_id}/timeline  one order's events
//! GET /order-lines                 GET /order-timeline     GET /daily-sales
//! GET /product-sales               GET /customer-summary   GET /fulfilment
//! GET /projections                 freshness of every projection (lag, state)
//! ```
//!
//! docs/query-api.md is the reference for clients.

mod cursor;
mod export;
mod list;
pub mod model;
mod params;
mod projections;
mod sort;
mod sql;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    middleware::from_fn_with_state,
    routing::get,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};
use tributary_platform::{
    auth::{AuthSettings, Guard, Scope, require},
    http::{operations_routes, postgres_ready},
};

pub use projections::Watermarks;

/// Settings of the query API role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySettings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Largest page a client may ask for.
    pub max_page_size: i64,
    /// Most rows one CSV export holds: a larger result is refused unless the
    /// client asks for the first `limit` rows.
    pub csv_max_rows: i64,
    /// Longest `GET /projections` waits for Kafka's watermarks before
    /// answering without the lag.
    #[serde(with = "humantime_serde")]
    pub kafka_timeout: Duration,
    /// Longest a query may take before it is answered with 503 (for a CSV
    /// export: until its first bytes).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8082).into(),
            max_page_size: 1000,
            csv_max_rows: 1_000_000,
            kafka_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
struct AppState {
    pool: PgPool,
    limits: params::Limits,
    watermarks: Arc<Watermarks>,
    kafka_timeout: Duration,
}

/// The query API's routes (bearer token with the `query` scope), with
/// operations routes (open). `watermarks` reads the topics' ends for
/// `GET /projections`.
pub fn router(
    pool: PgPool,
    settings: &QuerySettings,
    auth: Arc<AuthSettings>,
    watermarks: Watermarks,
) -> Router {
    let ready = postgres_ready(pool.clone());
    let mut routes = Router::new()
        .route("/orders/{order_id}", get(list::order))
        .route("/orders/{order_id}/timeline", get(list::timeline))
        .route("/projections", get(projections::list));
    for model in model::MODELS {
        routes = routes.route(
            &format!("/{}", model.path),
            get(
                move |State(state): State<AppState>, query: list::Params, headers: HeaderMap| {
                    list::list(state, model, query, headers)
                },
            ),
        );
    }
    routes
        .route_layer(from_fn_with_state(Guard::new(auth, Scope::Query), require))
        .with_state(AppState {
            pool,
            limits: params::Limits {
                max_page_size: settings.max_page_size,
                csv_max_rows: settings.csv_max_rows,
            },
            watermarks: Arc::new(watermarks),
            kafka_timeout: settings.kafka_timeout,
        })
        .merge(operations_routes(ready))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
}
