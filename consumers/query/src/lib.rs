//! The query API: HTTP reads over the read models (`read_model` schema).
//!
//! ```text
//! GET /orders/{order_id}                        one order
//! GET /orders?status=&customer_id=&limit=&after=  orders, newest id last, keyset-paged
//! ```

mod orders;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, middleware::from_fn_with_state, routing::get};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};
use tributary_platform::{
    auth::{AuthSettings, Guard, Scope, require},
    http::{operations_routes, postgres_ready},
};

pub use orders::OrderView;

/// Settings of the query API role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySettings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Largest page a client may ask for.
    pub max_page_size: i64,
    /// Longest a query may take before it is answered with 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8082).into(),
            max_page_size: 1000,
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
struct AppState {
    pool: PgPool,
    max_page_size: i64,
}

/// The query API's routes (bearer token with the `query` scope), with
/// operations routes (open).
pub fn router(pool: PgPool, settings: &QuerySettings, auth: Arc<AuthSettings>) -> Router {
    let ready = postgres_ready(pool.clone());
    Router::new()
        .route("/orders", get(orders::list))
        .route("/orders/{order_id}", get(orders::get))
        .route_layer(from_fn_with_state(Guard::new(auth, Scope::Query), require))
        .with_state(AppState {
            pool,
            max_page_size: settings.max_page_size,
        })
        .merge(operations_routes(ready))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
}
