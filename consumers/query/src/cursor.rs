//! Keyset cursors: where a page ended, as an opaque token.
//!
//! A cursor holds the last row's values of the order columns (the sort
//! column, then the key columns), with the model and the sort it was made
//! for, so a cursor from another list or another sort is refused rather
//! than silently skipping rows. It is hex-encoded JSON: opaque to clients,
//! safe in a URL without escaping, and only ever read back into typed
//! values that are bound as parameters.

use serde::{Deserialize, Serialize};

use crate::{
    model::{Column, ReadModel, Value},
    sort::Sort,
};

/// Longest cursor accepted, in characters.
const MAX_LEN: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// The model's path.
    m: String,
    /// The sort (`-placed_at`).
    s: String,
    /// The order columns' values as text; `null` for NULL.
    v: Vec<Option<String>>,
}

/// The cursor after `values` (the order columns' values of the last row).
pub(crate) fn encode(model: &ReadModel, sort: &Sort, values: &[&Value]) -> String {
    let payload = Payload {
        m: model.path.to_owned(),
        s: sort.spec(),
        v: values.iter().map(|v| v.text()).collect(),
    };
    let json = serde_json::to_vec(&payload).expect("a cursor serializes");
    let mut hex = String::with_capacity(json.len() * 2);
    for byte in json {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    hex
}

/// The order columns' values a cursor holds, checked against the list and
/// sort it is used with.
pub(crate) fn decode(
    model: &ReadModel,
    sort: &Sort,
    order: &[&'static Column],
    cursor: &str,
) -> Result<Vec<Value>, String> {
    let invalid =
        || "is not a cursor of this list: pass back `next` of the previous page".to_owned();
    if cursor.len() > MAX_LEN || !cursor.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes = cursor
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if payload.m != model.path {
        return Err(format!(
            "is a cursor of /{}, not of /{}",
            payload.m, model.path
        ));
    }
    if payload.s != sort.spec() {
        return Err(format!(
            "was made for sort={}: keep the sort while paging",
            payload.s
        ));
    }
    if payload.v.len() != order.len() {
        return Err(invalid());
    }
    order
        .iter()
        .zip(payload.v)
        .map(|(column, text)| match text {
            None if column.nullable => Ok(Value::Null),
            None => Err(invalid()),
            Some(text) => column.kind.parse(&text).map_err(|_| invalid()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::model::{FULFILMENT, ORDERS};

    fn sort(model: &'static ReadModel, spec: &str) -> Sort {
        Sort::parse(model, spec).unwrap()
    }

    #[test]
    fn a_cursor_reads_back_the_values_it_was_made_from() {
        let sort = sort(&FULFILMENT, "-shipped_at");
        let order = sort.order(&FULFILMENT);
        for first in [
            Value::Null,
            Value::Time(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()),
        ] {
            let values = vec![first, Value::Uuid(Uuid::now_v7())];
            let cursor = encode(&FULFILMENT, &sort, &values.iter().collect::<Vec<_>>());
            assert!(cursor.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(decode(&FULFILMENT, &sort, &order, &cursor).unwrap(), values);
        }
    }

    #[test]
    fn a_cursor_of_another_sort_list_or_shape_is_refused() {
        let by_total = sort(&ORDERS, "total_minor");
        let values = [Value::Int(5), Value::Uuid(Uuid::now_v7())];
        let cursor = encode(&ORDERS, &by_total, &values.iter().collect::<Vec<_>>());
        let descending = sort(&ORDERS, "-total_minor");
        let error = decode(&ORDERS, &descending, &descending.order(&ORDERS), &cursor).unwrap_err();
        assert!(error.contains("sort=total_minor"), "{error}");
        let other = sort(&FULFILMENT, "paid_at");
        let error = decode(&FULFILMENT, &other, &other.order(&FULFILMENT), &cursor).unwrap_err();
        assert!(error.contains("/orders"), "{error}");
        for garbage in ["", "zz", "abc", "7b7d", &"00".repeat(3000)] {
            assert!(
                decode(&ORDERS, &by_total, &by_total.order(&ORDERS), garbage).is_err(),
                "{garbage}"
            );
        }
        // A NULL where the column cannot hold one.
        let nulls = [Value::Null, Value::Uuid(Uuid::now_v7())];
        let cursor = encode(&ORDERS, &by_total, &nulls.iter().collect::<Vec<_>>());
        assert!(decode(&ORDERS, &by_total, &by_total.order(&ORDERS), &cursor).is_err());
    }
}
