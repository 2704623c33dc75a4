//! SQL for a list request. Identifiers come only from the descriptors in
//! [`crate::model`] (static, checked by a test to be plain identifiers);
//! every value a client sent is a bound parameter.
//!
//! Dynamic SQL, built with `QueryBuilder` rather than checked by sqlx's
//! macros: which filters, which sort column and which keyset cursor a
//! request uses is only known at run time, and each combination is a
//! different statement (the macros check fixed statements only). The
//! query API's other statements are static and compile-checked.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row as _, postgres::PgRow};

use crate::{
    model::{Column, Kind, ReadModel, Row, Value},
    params::ListRequest,
};

/// `SELECT <columns> FROM read_model.<table> WHERE … ORDER BY … LIMIT <limit>`.
pub(crate) fn select(request: &ListRequest, limit: i64) -> QueryBuilder<Postgres> {
    let model = request.model;
    let mut query = QueryBuilder::new("SELECT ");
    for (i, column) in model.columns.iter().enumerate() {
        if i > 0 {
            query.push(", ");
        }
        query.push(column.name);
    }
    query.push(" FROM read_model.").push(model.table);
    push_where(&mut query, request);
    push_order_by(&mut query, request);
    query.push(" LIMIT ").push_bind(limit);
    query
}

/// How many rows the request matches, counting no further than `cap + 1`
/// (so it costs no more than reading `cap + 1` rows).
pub(crate) fn count_up_to(request: &ListRequest, cap: i64) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM read_model.");
    query.push(request.model.table);
    push_where(&mut query, request);
    query.push(" LIMIT ").push_bind(cap + 1).push(") AS capped");
    query
}

/// Whether the row of `model` with this key exists.
pub(crate) fn exists(model: &ReadModel, key: &Value) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::new("SELECT EXISTS (SELECT 1 FROM read_model.");
    query
        .push(model.table)
        .push(" WHERE ")
        .push(model.key[0])
        .push(" = ");
    bind(&mut query, key);
    query.push(")");
    query
}

fn push_where(query: &mut QueryBuilder<Postgres>, request: &ListRequest) {
    query.push(" WHERE TRUE");
    for (column, value) in &request.filters {
        query.push(" AND ").push(column.name).push(" = ");
        bind(query, value);
    }
    if let Some(time) = request.model.time {
        if let Some(from) = &request.from {
            query.push(" AND ").push(time).push(" >= ");
            bind(query, from);
        }
        if let Some(to) = &request.to {
            query.push(" AND ").push(time).push(" < ");
            bind(query, to);
        }
    }
    if let Some(after) = &request.after {
        query.push(" AND ");
        push_after(query, request, after);
    }
}

/// The rows that come after `after` in the request's order. The order is
/// `sort NULLS LAST, key…` ascending, its exact reverse descending; key
/// columns are never NULL.
fn push_after(query: &mut QueryBuilder<Postgres>, request: &ListRequest, after: &[Value]) {
    let order = request.sort.order(request.model);
    let cmp = if request.sort.descending {
        " < "
    } else {
        " > "
    };
    let sort = order[0];
    if !sort.nullable {
        tuple_cmp(query, &order, after, cmp);
        return;
    }
    // A nullable sort column is never a key column, so keys follow it.
    let (keys, key_values) = (&order[1..], &after[1..]);
    match (&after[0], request.sort.descending) {
        (Value::Null, false) => {
            query.push("(").push(sort.name).push(" IS NULL AND ");
            tuple_cmp(query, keys, key_values, cmp);
            query.push(")");
        }
        (Value::Null, true) => {
            query.push("(").push(sort.name).push(" IS NOT NULL OR ");
            tuple_cmp(query, keys, key_values, cmp);
            query.push(")");
        }
        (value, descending) => {
            query.push("(").push(sort.name).push(cmp);
            bind(query, value);
            query.push(" OR (").push(sort.name).push(" = ");
            bind(query, value);
            query.push(" AND ");
            tuple_cmp(query, keys, key_values, cmp);
            query.push(")");
            if !descending {
                query.push(" OR ").push(sort.name).push(" IS NULL");
            }
            query.push(")");
        }
    }
}

/// `(a, b) > ($1, $2)`: row comparison, lexicographic.
fn tuple_cmp(query: &mut QueryBuilder<Postgres>, columns: &[&Column], values: &[Value], cmp: &str) {
    query.push("(");
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            query.push(", ");
        }
        query.push(column.name);
    }
    query.push(")").push(cmp).push("(");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            query.push(", ");
        }
        bind(query, value);
    }
    query.push(")");
}

fn push_order_by(query: &mut QueryBuilder<Postgres>, request: &ListRequest) {
    let direction = if request.sort.descending {
        " DESC"
    } else {
        " ASC"
    };
    query.push(" ORDER BY ");
    for (i, column) in request.sort.order(request.model).iter().enumerate() {
        if i > 0 {
            query.push(", ");
        }
        query.push(column.name).push(direction);
        if column.nullable {
            query.push(if request.sort.descending {
                " NULLS FIRST"
            } else {
                " NULLS LAST"
            });
        }
    }
}

fn bind(query: &mut QueryBuilder<Postgres>, value: &Value) {
    match value.clone() {
        Value::Null => query.push("NULL"),
        Value::Uuid(v) => query.push_bind(v),
        Value::Text(v) => query.push_bind(v),
        Value::Int(v) => query.push_bind(v),
        Value::Float(v) => query.push_bind(v),
        Value::Time(v) => query.push_bind(v),
        Value::Date(v) => query.push_bind(v),
    };
}

/// A database row of `model` (selected by [`select`]) as a [`Row`].
pub(crate) fn decode(model: &'static ReadModel, row: &PgRow) -> Result<Row, sqlx::Error> {
    let values = model
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            Ok(match column.kind {
                Kind::Uuid => row.try_get::<Option<uuid::Uuid>, _>(i)?.map(Value::Uuid),
                Kind::Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
                Kind::Int4 => row
                    .try_get::<Option<i32>, _>(i)?
                    .map(|v| Value::Int(v.into())),
                Kind::Int8 => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                Kind::Float8 => row.try_get::<Option<f64>, _>(i)?.map(Value::Float),
                Kind::Timestamp => row.try_get::<Option<DateTime<Utc>>, _>(i)?.map(Value::Time),
                Kind::Date => row
                    .try_get::<Option<chrono::NaiveDate>, _>(i)?
                    .map(Value::Date),
            }
            .unwrap_or(Value::Null))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Row { model, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{FULFILMENT, ORDERS},
        sort::Sort,
    };

    fn sql(mut request: ListRequest, sort: &str, after: Option<Vec<Value>>) -> String {
        request.sort = Sort::parse(request.model, sort).unwrap();
        request.after = after;
        select(&request, 11).into_string()
    }

    #[test]
    fn a_non_null_sort_pages_by_row_comparison() {
        let id = Value::Uuid(uuid::Uuid::nil());
        assert_eq!(
            sql(
                ListRequest::all(&ORDERS),
                "-total_minor",
                Some(vec![Value::Int(5), id])
            )
            .split(" FROM ")
            .nth(1)
            .unwrap(),
            "read_model.orders WHERE TRUE AND (total_minor, order_id) < ($1, $2) \
             ORDER BY total_minor DESC, order_id DESC LIMIT $3"
        );
    }

    #[test]
    fn a_nullable_sort_places_nulls_last_ascending_and_first_descending() {
        let id = || Value::Uuid(uuid::Uuid::nil());
        let at = || Value::Time(Utc::now());
        let tail = |s: String| s.split(" WHERE TRUE AND ").nth(1).unwrap().to_owned();
        assert_eq!(
            tail(sql(
                ListRequest::all(&FULFILMENT),
                "shipped_at",
                Some(vec![at(), id()])
            )),
            "(shipped_at > $1 OR (shipped_at = $2 AND (order_id) > ($3)) OR shipped_at IS NULL) \
             ORDER BY shipped_at ASC NULLS LAST, order_id ASC LIMIT $4"
        );
        assert_eq!(
            tail(sql(
                ListRequest::all(&FULFILMENT),
                "shipped_at",
                Some(vec![Value::Null, id()])
            )),
            "(shipped_at IS NULL AND (order_id) > ($1)) \
             ORDER BY shipped_at ASC NULLS LAST, order_id ASC LIMIT $2"
        );
        assert_eq!(
            tail(sql(
                ListRequest::all(&FULFILMENT),
                "-shipped_at",
                Some(vec![Value::Null, id()])
            )),
            "(shipped_at IS NOT NULL OR (order_id) < ($1)) \
             ORDER BY shipped_at DESC NULLS FIRST, order_id DESC LIMIT $2"
        );
        assert_eq!(
            tail(sql(
                ListRequest::all(&FULFILMENT),
                "-shipped_at",
                Some(vec![at(), id()])
            )),
            "(shipped_at < $1 OR (shipped_at = $2 AND (order_id) < ($3))) \
             ORDER BY shipped_at DESC NULLS FIRST, order_id DESC LIMIT $4"
        );
    }
}
