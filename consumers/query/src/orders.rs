//! `read_model.orders` over HTTP.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tributary_platform::http::Problem;
use uuid::Uuid;

use crate::AppState;

/// An order as the read model holds it. Amounts are minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    pub line_count: i32,
    pub item_count: i32,
    pub refunded_minor: i64,
    pub placed_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// `SELECT <every column of OrderView> FROM read_model.orders`, as a literal for `concat!`.
macro_rules! select_orders {
    () => {
        "SELECT order_id, customer_id, status, currency, total_minor, line_count, item_count,
             refunded_minor, placed_at, cancelled_at, paid_at, shipped_at, delivered_at, refunded_at, updated_at
         FROM read_model.orders "
    };
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, Problem> {
    let order_id = Uuid::parse_str(&order_id)
        .map_err(|_| Problem::invalid_field("order_id", "the path must hold the order's UUID"))?;
    let order: Option<OrderView> = sqlx::query_as(concat!(select_orders!(), "WHERE order_id = $1"))
        .bind(order_id)
        .fetch_optional(&state.pool)
        .await
        .map_err(|e| Problem::internal(&e.into()))?;
    order.map(Json).ok_or_else(|| {
        Problem::not_found(format!("order {order_id} is not in the read model (yet)"))
    })
}

/// Filters and paging of `GET /orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    customer_id: Option<String>,
    limit: Option<i64>,
    /// The last `order_id` of the previous page.
    after: Option<String>,
}

/// A page of orders and the cursor of the next page.
#[derive(Debug, Serialize)]
pub(crate) struct Page {
    items: Vec<OrderView>,
    next_after: Option<Uuid>,
}

const STATUSES: [&str; 6] = [
    "placed",
    "cancelled",
    "paid",
    "shipped",
    "delivered",
    "refunded",
];

pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, Problem> {
    let Query(query) = query.map_err(|rejection| {
        let detail = rejection.body_text();
        let field = detail
            .split("unknown field `")
            .nth(1)
            .and_then(|r| r.split('`').next())
            .unwrap_or("query");
        Problem::invalid_field(field, detail.clone())
    })?;
    let parse_uuid = |field: &str, value: &Option<String>| -> Result<Option<Uuid>, Problem> {
        value
            .as_deref()
            .map(|v| {
                Uuid::parse_str(v).map_err(|_| Problem::invalid_field(field, "must be a UUID"))
            })
            .transpose()
    };
    let customer_id = parse_uuid("customer_id", &query.customer_id)?;
    let after = parse_uuid("after", &query.after)?;
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(Problem::invalid_field(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=state.max_page_size).contains(&limit) {
        return Err(Problem::invalid_field(
            "limit",
            format!("must be between 1 and {}", state.max_page_size),
        ));
    }
    let items: Vec<OrderView> = sqlx::query_as(concat!(
        select_orders!(),
        "WHERE ($1::text IS NULL OR status = $1)
           AND ($2::uuid IS NULL OR customer_id = $2)
           AND ($3::uuid IS NULL OR order_id > $3)
         ORDER BY order_id LIMIT $4",
    ))
    .bind(&query.status)
    .bind(customer_id)
    .bind(after)
    .bind(limit)
    .fetch_all(&state.pool)
    .await
    .map_err(|e| Problem::internal(&e.into()))?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|o| o.order_id))
        .flatten();
    Ok(Json(Page { items, next_after }))
}
