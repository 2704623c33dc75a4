//! A list request's query parameters, checked against the model's
//! descriptor. Every way one can be wrong is a 400 naming the parameter.

use crate::{
    cursor,
    model::{Check, Column, Kind, MAX_TEXT, ReadModel, Value},
    sort::Sort,
};
use tributary_platform::http::Problem;

/// Parameters every list takes, besides the model's filters.
const COMMON: [&str; 4] = ["limit", "after", "sort", "format"];

/// The page size when none is asked for.
pub(crate) const DEFAULT_LIMIT: i64 = 100;

/// JSON pages or a CSV export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Csv,
}

/// How far a request may reach.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest JSON page.
    pub(crate) max_page_size: i64,
    /// Most rows of one CSV export.
    pub(crate) csv_max_rows: i64,
}

/// A checked list request.
#[derive(Debug, Clone)]
pub(crate) struct ListRequest {
    pub(crate) model: &'static ReadModel,
    /// `column = value`, each bound as a parameter.
    pub(crate) filters: Vec<(&'static Column, Value)>,
    /// Inclusive lower bound of the model's time column.
    pub(crate) from: Option<Value>,
    /// Exclusive upper bound of the model's time column.
    pub(crate) to: Option<Value>,
    pub(crate) sort: Sort,
    /// The order columns' values of the last row already seen.
    pub(crate) after: Option<Vec<Value>>,
    /// Rows asked for: a page size (JSON), or a cap on the export (CSV).
    pub(crate) limit: Option<i64>,
    pub(crate) format: Format,
}

impl ListRequest {
    /// The model's default order, no filters: the start of a list.
    pub(crate) fn all(model: &'static ReadModel) -> Self {
        Self {
            model,
            filters: Vec::new(),
            from: None,
            to: None,
            sort: Sort::parse(model, model.default_sort).expect("the default sort is sortable"),
            after: None,
            limit: None,
            format: Format::Json,
        }
    }

    /// Checks `params` (the query string, in order) against `model`.
    /// `fixed` are filters the path already sets; `accept` is the Accept header.
    pub(crate) fn parse(
        model: &'static ReadModel,
        params: &[(String, String)],
        fixed: &[(&'static str, Value)],
        accept: Option<&str>,
        limits: Limits,
    ) -> Result<Self, Problem> {
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in params {
            let known = COMMON.contains(&name.as_str())
                || (model.time.is_some() && (name == "from" || name == "to"))
                || model.filters.iter().any(|f| f.column == name);
            if fixed.iter().any(|(f, _)| f == name) {
                return Err(Problem::invalid_field(
                    name.as_str(),
                    format!("{name} is given by the path"),
                ));
            }
            if !known {
                return Err(Problem::invalid_field(
                    name.as_str(),
                    format!(
                        "unknown parameter {name:?}: /{} takes {}",
                        model.path,
                        parameters(model).join(", ")
                    ),
                ));
            }
            if seen.contains(&name.as_str()) {
                return Err(Problem::invalid_field(
                    name.as_str(),
                    format!("{name} is given more than once"),
                ));
            }
            seen.push(name);
            if value.is_empty() {
                return Err(Problem::invalid_field(
                    name.as_str(),
                    format!("{name} must not be empty"),
                ));
            }
        }
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };

        let format = match param("format") {
            Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(other) => {
                return Err(Problem::invalid_field(
                    "format",
                    format!("unknown format {other:?}: json or csv"),
                ));
            }
            None if accepts_csv(accept) => Format::Csv,
            None => Format::Json,
        };

        let mut request = Self::all(model);
        request.format = format;
        for (name, value) in fixed {
            let column = model.column(name).expect("a fixed filter names a column");
            request.filters.push((column, value.clone()));
        }
        for filter in model.filters {
            let Some(text) = param(filter.column) else {
                continue;
            };
            let column = model.column(filter.column).expect("filters name columns");
            request.filters.push((
                column,
                filter_value(filter.column, column, filter.check, text)?,
            ));
        }
        if let Some(time) = model.time {
            let kind = model.column(time).expect("the time column").kind;
            let bound = |name: &'static str| {
                param(name)
                    .map(|text| {
                        kind.parse(text).map_err(|expected| {
                            Problem::invalid_field(name, format!("{name} {expected}"))
                        })
                    })
                    .transpose()
            };
            request.from = bound("from")?;
            request.to = bound("to")?;
            if let (Some(from), Some(to)) = (&request.from, &request.to)
                && !less(from, to)
            {
                return Err(Problem::invalid_field(
                    "to",
                    format!("to must be later than from ({time} >= from and < to)"),
                ));
            }
        }
        if let Some(spec) = param("sort") {
            request.sort = Sort::parse(model, spec)?;
        }
        if let Some(after) = param("after") {
            let order = request.sort.order(model);
            let bare_key = (model.bare_key_cursor && order.len() == 1)
                .then(|| order[0].kind.parse(after).ok())
                .flatten();
            request.after = Some(match bare_key {
                Some(key) => vec![key],
                None => cursor::decode(model, &request.sort, &order, after)
                    .map_err(|detail| Problem::invalid_field("after", format!("after {detail}")))?,
            });
        }
        if let Some(limit) = param("limit") {
            let most = match format {
                Format::Json => limits.max_page_size,
                Format::Csv => limits.csv_max_rows,
            };
            let limit = limit
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=most).contains(l))
                .ok_or_else(|| {
                    Problem::invalid_field("limit", format!("limit must be between 1 and {most}"))
                })?;
            request.limit = Some(limit);
        }
        Ok(request)
    }
}

/// Whether a JSON page or a CSV export is wanted, from the Accept header: the
/// first acceptable media range that names one of them decides.
fn accepts_csv(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        if refused {
            continue;
        }
        match media.as_str() {
            "text/csv" => return true,
            "application/json" | "application/*" | "*/*" => return false,
            _ => {}
        }
    }
    false
}

fn filter_value(
    name: &'static str,
    column: &Column,
    check: Check,
    text: &str,
) -> Result<Value, Problem> {
    match check {
        Check::OneOf(allowed) if !allowed.contains(&text) => Err(Problem::invalid_field(
            name,
            format!("{name} must be one of {}", allowed.join(", ")),
        )),
        Check::Currency if !(text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase())) => {
            Err(Problem::invalid_field(
                name,
                format!("{name} must be an ISO 4217 code such as EUR"),
            ))
        }
        _ if column.kind == Kind::Text && text.chars().count() > MAX_TEXT => Err(
            Problem::invalid_field(name, format!("{name} is longer than {MAX_TEXT} characters")),
        ),
        _ => column
            .kind
            .parse(text)
            .map_err(|expected| Problem::invalid_field(name, format!("{name} {expected}"))),
    }
}

fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Time(a), Value::Time(b)) => a < b,
        (Value::Date(a), Value::Date(b)) => a < b,
        _ => true,
    }
}

/// Every parameter `model`'s list takes.
pub(crate) fn parameters(model: &ReadModel) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = model.filters.iter().map(|f| f.column).collect();
    if model.time.is_some() {
        names.extend(["from", "to"]);
    }
    names.extend(COMMON);
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DAILY_SALES, FULFILMENT, ORDER_TIMELINE, ORDERS};

    const LIMITS: Limits = Limits {
        max_page_size: 1000,
        csv_max_rows: 50_000,
    };

    fn parse(model: &'static ReadModel, query: &str) -> Result<ListRequest, Problem> {
        let params: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        ListRequest::parse(model, &params, &[], None, LIMITS)
    }

    fn field(model: &'static ReadModel, query: &str) -> String {
        let problem = parse(model, query).expect_err(query);
        assert_eq!(problem.status, 400, "{query}");
        problem.field.unwrap_or_default()
    }

    #[test]
    fn every_bad_parameter_is_named() {
        for (model, query, named) in [
            (&ORDERS, "colour=red", "colour"),
            (&ORDERS, "status=lost", "status"),
            (&ORDERS, "status=paid&status=placed", "status"),
            (&ORDERS, "status=", "status"),
            (&ORDERS, "customer_id=bob", "customer_id"),
            (&ORDERS, "currency=eur", "currency"),
            (&ORDERS, "from=yesterday", "from"),
            (&ORDERS, "to=2024-02-30", "to"),
            (&ORDERS, "from=2024-05-02&to=2024-05-01", "to"),
            (&ORDERS, "sort=secret", "sort"),
            (&ORDERS, "sort=-", "sort"),
            (&ORDERS, "after=nonsense", "after"),
            (&ORDERS, "limit=0", "limit"),
            (&ORDERS, "limit=1001", "limit"),
            (&ORDERS, "limit=ten", "limit"),
            (&ORDERS, "format=xml", "format"),
            (&DAILY_SALES, "from=2024-05-01T00:00:00Z", "from"),
            (&DAILY_SALES, "status=paid", "status"),
            (&FULFILMENT, "carrier=", "carrier"),
        ] {
            assert_eq!(field(model, query), named, "{query}");
        }
        let long = format!("sku={}", "x".repeat(MAX_TEXT + 1));
        assert_eq!(field(&crate::model::ORDER_LINES, &long), "sku");
    }

    #[test]
    fn a_filter_given_by_the_path_cannot_be_given_again() {
        let id = uuid::Uuid::now_v7();
        let problem = ListRequest::parse(
            &ORDER_TIMELINE,
            &[("order_id".into(), id.to_string())],
            &[("order_id", Value::Uuid(id))],
            None,
            LIMITS,
        )
        .unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("order_id"));
    }

    #[test]
    fn filters_ranges_sort_and_limit_are_typed() {
        let request = parse(
            &ORDERS,
            "status=paid&currency=EUR&from=2024-05-01&to=2024-05-02T00:00:00Z&sort=-total_minor&limit=10",
        )
        .unwrap();
        let filters: Vec<(&str, String)> = request
            .filters
            .iter()
            .map(|(c, v)| (c.name, v.to_string()))
            .collect();
        assert_eq!(
            filters,
            [("status", "paid".into()), ("currency", "EUR".into())]
        );
        assert_eq!(request.from.unwrap().to_string(), "2024-05-01T00:00:00Z");
        assert_eq!(request.to.unwrap().to_string(), "2024-05-02T00:00:00Z");
        assert_eq!(request.sort.spec(), "-total_minor");
        assert_eq!(
            request
                .sort
                .order(&ORDERS)
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>(),
            ["total_minor", "order_id"]
        );
        assert_eq!(request.limit, Some(10));
        assert_eq!(request.format, Format::Json);
    }

    #[test]
    fn csv_is_asked_for_by_format_or_accept_and_may_take_more_rows() {
        let csv = parse(&ORDERS, "format=csv&limit=50000").unwrap();
        assert_eq!((csv.format, csv.limit), (Format::Csv, Some(50_000)));
        assert_eq!(field(&ORDERS, "format=csv&limit=50001"), "limit");
        for (accept, format) in [
            ("text/csv", Format::Csv),
            ("text/csv; charset=utf-8", Format::Csv),
            ("application/json, text/csv", Format::Json),
            ("text/html, text/csv;q=0.5", Format::Csv),
            ("text/csv;q=0, application/json", Format::Json),
            ("*/*", Format::Json),
        ] {
            let request = ListRequest::parse(&ORDERS, &[], &[], Some(accept), LIMITS).unwrap();
            assert_eq!(request.format, format, "{accept}");
        }
        let json = ListRequest::parse(
            &ORDERS,
            &[("format".into(), "json".into())],
            &[],
            Some("text/csv"),
            LIMITS,
        )
        .unwrap();
        assert_eq!(json.format, Format::Json, "format= wins over Accept");
    }

    #[test]
    fn orders_take_a_bare_order_id_as_after_when_sorted_by_it() {
        let id = uuid::Uuid::now_v7();
        let request = parse(&ORDERS, &format!("after={id}")).unwrap();
        assert_eq!(request.after, Some(vec![Value::Uuid(id)]));
        assert_eq!(
            field(&ORDERS, &format!("after={id}&sort=placed_at")),
            "after"
        );
        assert_eq!(
            field(&FULFILMENT, &format!("after={id}&sort=order_id")),
            "after"
        );
    }
}
