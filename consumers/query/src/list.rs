//! The list routes: one generic handler for every read model, answering
//! JSON pages or a CSV export.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;
use serde::Serialize;
use tributary_platform::http::Problem;

use crate::{
    AppState, cursor, export,
    model::{ORDER_TIMELINE, ORDERS, ReadModel, Row, Value},
    params::{DEFAULT_LIMIT, Format, ListRequest},
    sql,
};

/// A page of rows and the cursor of the next one.
#[derive(Debug, Serialize)]
struct Page {
    items: Vec<Row>,
    /// Pass back as `after` for the next page; `null` on the last page.
    next: Option<String>,
    /// The last key of the page, for clients of `/orders` from before cursors.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<Option<String>>,
}

/// The query string as name–value pairs, in order.
pub(crate) type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn params(query: Params) -> Result<Vec<(String, String)>, Problem> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|rejection| Problem::invalid_field("query", rejection.body_text()))
}

/// `GET /<model>`.
pub(crate) async fn list(
    state: AppState,
    model: &'static ReadModel,
    query: Params,
    headers: HeaderMap,
) -> Response {
    let request = match params(query)
        .and_then(|params| ListRequest::parse(model, &params, &[], accept(&headers), state.limits))
    {
        Ok(request) => request,
        Err(problem) => return problem.into_response(),
    };
    answer(&state, request).await
}

/// `GET /orders/{order_id}/timeline`: the order's events, oldest first;
/// 404 when the order is not in the read model.
pub(crate) async fn timeline(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    query: Params,
    headers: HeaderMap,
) -> Response {
    let request = async {
        let order_id = order_id_of(&order_id)?;
        let request = ListRequest::parse(
            &ORDER_TIMELINE,
            &params(query)?,
            &[("order_id", order_id.clone())],
            accept(&headers),
            state.limits,
        )?;
        let found: bool = sql::exists(&ORDERS, &order_id)
            .build_query_scalar()
            .fetch_one(&state.pool)
            .await
            .map_err(|e| Problem::internal(&e.into()))?;
        if !found {
            return Err(not_in_read_model(&order_id));
        }
        Ok(request)
    };
    match request.await {
        Ok(request) => answer(&state, request).await,
        Err(problem) => problem.into_response(),
    }
}

/// `GET /orders/{order_id}`: one order.
pub(crate) async fn order(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<Row>, Problem> {
    let order_id = order_id_of(&order_id)?;
    let mut request = ListRequest::all(&ORDERS);
    let key = ORDERS.column("order_id").expect("the key");
    request.filters.push((key, order_id.clone()));
    let row = sql::select(&request, 1)
        .build()
        .fetch_optional(&state.pool)
        .await
        .map_err(|e| Problem::internal(&e.into()))?;
    match row {
        Some(row) => Ok(Json(
            sql::decode(&ORDERS, &row).map_err(|e| Problem::internal(&e.into()))?,
        )),
        None => Err(not_in_read_model(&order_id)),
    }
}

fn order_id_of(text: &str) -> Result<Value, Problem> {
    uuid::Uuid::parse_str(text)
        .map(Value::Uuid)
        .map_err(|_| Problem::invalid_field("order_id", "the path must hold the order's UUID"))
}

fn not_in_read_model(order_id: &Value) -> Problem {
    Problem::not_found(format!("order {order_id} is not in the read model (yet)"))
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

async fn answer(state: &AppState, request: ListRequest) -> Response {
    let answered = match request.format {
        Format::Json => page(state, request).await.map(IntoResponse::into_response),
        Format::Csv => export::csv(state.pool.clone(), request, state.limits.csv_max_rows).await,
    };
    answered.unwrap_or_else(IntoResponse::into_response)
}

/// One page: `limit + 1` rows are read, so the last page says it is last.
async fn page(state: &AppState, request: ListRequest) -> Result<Json<Page>, Problem> {
    let model = request.model;
    let limit = request
        .limit
        .unwrap_or(DEFAULT_LIMIT.min(state.limits.max_page_size));
    let mut items: Vec<Row> = sql::select(&request, limit + 1)
        .build()
        .fetch(&state.pool)
        .map_err(anyhow::Error::from)
        .and_then(|row| async move { sql::decode(model, &row).map_err(Into::into) })
        .try_collect()
        .await
        .map_err(|e| Problem::internal(&e))?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let last = items.last().filter(|_| more);
    let order = request.sort.order(model);
    let next = last.map(|row| {
        let values: Vec<&Value> = order.iter().map(|c| row.get(c.name)).collect();
        cursor::encode(model, &request.sort, &values)
    });
    let next_after = model.bare_key_cursor.then(|| {
        last.filter(|_| order.len() == 1)
            .and_then(|row| row.get(order[0].name).text())
    });
    Ok(Json(Page {
        items,
        next,
        next_after,
    }))
}
