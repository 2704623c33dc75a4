//! The read models the API serves, one descriptor each: table, columns,
//! key, filters and sort whitelist. Routes, SQL, cursors and CSV are all
//! derived from these, so serving another table is one more entry in
//! [`MODELS`].

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Serialize, Serializer, ser::SerializeMap};
use uuid::Uuid;

use Kind::{Date, Float8, Int4, Int8, Text, Timestamp};

/// The PostgreSQL type of a column, as the API reads, binds and prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `uuid`
    Uuid,
    /// `text` or `char(n)`
    Text,
    /// `integer`
    Int4,
    /// `bigint`
    Int8,
    /// `double precision`
    Float8,
    /// `timestamptz`, printed as RFC 3339 in UTC.
    Timestamp,
    /// `date`, printed as `YYYY-MM-DD`.
    Date,
}

impl Kind {
    /// Parses a value sent by a client (a filter, a range bound or a cursor
    /// part). The error says what was expected.
    pub(crate) fn parse(self, text: &str) -> Result<Value, &'static str> {
        match self {
            Kind::Uuid => Uuid::parse_str(text)
                .map(Value::Uuid)
                .map_err(|_| "must be a UUID"),
            Kind::Text => Ok(Value::Text(text.to_owned())),
            Kind::Int4 | Kind::Int8 => text
                .parse()
                .map(Value::Int)
                .map_err(|_| "must be an integer"),
            Kind::Float8 => text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::Float)
                .ok_or("must be a number"),
            Kind::Timestamp => DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| {
                    NaiveDate::parse_from_str(text, "%Y-%m-%d")
                        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
                })
                .map(Value::Time)
                .map_err(|_| {
                    "must be an RFC 3339 time (2024-05-01T12:00:00Z) or a date (2024-05-01, midnight UTC)"
                }),
            Kind::Date => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(Value::Date)
                .map_err(|_| "must be a date (2024-05-01)"),
        }
    }
}

/// One value of a row, a filter or a cursor.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL: JSON `null`, an empty CSV field.
    Null,
    /// A UUID.
    Uuid(Uuid),
    /// Text.
    Text(String),
    /// An integer (`integer` widened, or `bigint`).
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A point in time.
    Time(DateTime<Utc>),
    /// A calendar day.
    Date(NaiveDate),
}

impl Value {
    /// The value as text (CSV fields, cursor parts); `None` for NULL.
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// The text of a value: what CSV holds and what [`Kind::parse`] reads back.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Uuid(u) => u.fmt(f),
            Value::Text(t) => f.write_str(t),
            Value::Int(i) => i.fmt(f),
            Value::Float(x) => x.fmt(f),
            Value::Time(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Value::Date(d) => d.format("%Y-%m-%d").fmt(f),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_none(),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(x) => serializer.serialize_f64(*x),
            other => serializer.collect_str(other),
        }
    }
}

/// A row of a read model: its values in the model's column order, which
/// JSON keeps.
#[derive(Debug, Clone)]
pub struct Row {
    pub(crate) model: &'static ReadModel,
    pub(crate) values: Vec<Value>,
}

impl Row {
    /// The value of `column`.
    pub(crate) fn get(&self, column: &str) -> &Value {
        let index = self
            .model
            .columns
            .iter()
            .position(|c| c.name == column)
            .expect("a column of the model");
        &self.values[index]
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.values.len()))?;
        for (column, value) in self.model.columns.iter().zip(&self.values) {
            map.serialize_entry(column.name, value)?;
        }
        map.end()
    }
}

/// A column of a read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Its name in the table, in JSON and in the CSV header.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether it may be NULL (cursors and sorting must then place NULLs).
    pub nullable: bool,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: false,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: true,
    }
}

/// What a filter accepts besides a value of its column's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Any value of the column's kind (text up to [`MAX_TEXT`] characters).
    Kind,
    /// One of these values.
    OneOf(&'static [&'static str]),
    /// An ISO 4217 code: three capital letters.
    Currency,
}

/// Longest text a filter takes.
pub const MAX_TEXT: usize = 200;

/// An equality filter: `?<column>=<value>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    /// The column (and query parameter).
    pub column: &'static str,
    /// What it accepts.
    pub check: Check,
}

const fn eq(column: &'static str) -> Filter {
    Filter {
        column,
        check: Check::Kind,
    }
}

const CURRENCY: Filter = Filter {
    column: "currency",
    check: Check::Currency,
};

/// A read model as the API serves it.
#[derive(Debug, PartialEq)]
pub struct ReadModel {
    /// The route: `GET /<path>` lists it.
    pub path: &'static str,
    /// The table in the `read_model` schema.
    pub table: &'static str,
    /// Every column, in the order JSON and CSV give them.
    pub columns: &'static [Column],
    /// The primary key: the tie-breaker of every sort and part of every cursor.
    pub key: &'static [&'static str],
    /// The column `from` and `to` bound (inclusive, exclusive), if any.
    pub time: Option<&'static str>,
    /// Equality filters.
    pub filters: &'static [Filter],
    /// Columns `sort` accepts (`sort=col` ascending, `sort=-col` descending).
    pub sorts: &'static [&'static str],
    /// The sort when none is asked for.
    pub default_sort: &'static str,
    /// Whether `after` may also be a bare key value when sorted by the key,
    /// and pages carry `next_after` (the last key): what `/orders` offered
    /// before cursors, kept for its clients.
    pub bare_key_cursor: bool,
}

impl ReadModel {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The statuses an order can be in.
pub const ORDER_STATUSES: &[&str] = &[
    "placed",
    "cancelled",
    "paid",
    "shipped",
    "delivered",
    "refunded",
];

/// The events of an order, as `order_timeline.event_type` names them.
pub const ORDER_EVENT_TYPES: &[&str] = &[
    "OrderPlaced",
    "OrderCancelled",
    "OrderPaid",
    "OrderShipped",
    "OrderDelivered",
    "OrderRefunded",
];

/// `read_model.orders`.
pub static ORDERS: ReadModel = ReadModel {
    path: "orders",
    table: "orders",
    columns: &[
        col("order_id", Kind::Uuid),
        col("customer_id", Kind::Uuid),
        col("status", Text),
        col("currency", Text),
        col("total_minor", Int8),
        col("line_count", Int4),
        col("item_count", Int4),
        col("refunded_minor", Int8),
        col("placed_at", Timestamp),
        opt("cancelled_at", Timestamp),
        opt("paid_at", Timestamp),
        opt("shipped_at", Timestamp),
        opt("delivered_at", Timestamp),
        opt("refunded_at", Timestamp),
        col("updated_at", Timestamp),
        opt("channel", Text),
    ],
    key: &["order_id"],
    time: Some("placed_at"),
    filters: &[
        Filter {
            column: "status",
            check: Check::OneOf(ORDER_STATUSES),
        },
        eq("customer_id"),
        CURRENCY,
        eq("channel"),
    ],
    sorts: &[
        "order_id",
        "customer_id",
        "status",
        "currency",
        "total_minor",
        "line_count",
        "item_count",
        "refunded_minor",
        "placed_at",
        "cancelled_at",
        "paid_at",
        "shipped_at",
        "delivered_at",
        "refunded_at",
        "updated_at",
        "channel",
    ],
    default_sort: "order_id",
    bare_key_cursor: true,
};

/// `read_model.order_lines`.
pub static ORDER_LINES: ReadModel = ReadModel {
    path: "order-lines",
    table: "order_lines",
    columns: &[
        col("order_id", Kind::Uuid),
        col("line_no", Int4),
        col("sku", Text),
        col("quantity", Int4),
        col("unit_price_minor", Int8),
        col("currency", Text),
    ],
    key: &["order_id", "line_no"],
    time: None,
    filters: &[eq("order_id"), eq("sku"), CURRENCY],
    sorts: &[
        "order_id",
        "sku",
        "quantity",
        "unit_price_minor",
        "currency",
    ],
    default_sort: "order_id",
    bare_key_cursor: false,
};

/// `read_model.order_timeline`, also served per order as `/orders/{order_id}/timeline`.
pub static ORDER_TIMELINE: ReadModel = ReadModel {
    path: "order-timeline",
    table: "order_timeline",
    columns: &[
        col("order_id", Kind::Uuid),
        col("event_type", Text),
        col("occurred_at", Timestamp),
        opt("reference", Text),
        opt("amount_minor", Int8),
        opt("currency", Text),
    ],
    key: &["order_id", "event_type"],
    time: Some("occurred_at"),
    filters: &[
        eq("order_id"),
        Filter {
            column: "event_type",
            check: Check::OneOf(ORDER_EVENT_TYPES),
        },
        CURRENCY,
    ],
    sorts: &["occurred_at", "order_id", "event_type", "amount_minor"],
    default_sort: "occurred_at",
    bare_key_cursor: false,
};

/// `read_model.daily_sales`.
pub static DAILY_SALES: ReadModel = ReadModel {
    path: "daily-sales",
    table: "daily_sales",
    columns: &[
        col("day", Date),
        col("currency", Text),
        col("orders", Int4),
        col("gross_minor", Int8),
        col("refunds", Int4),
        col("refunded_minor", Int8),
        // Generated: never NULL in practice, but PostgreSQL does not promise it.
        opt("net_minor", Int8),
    ],
    key: &["day", "currency"],
    time: Some("day"),
    filters: &[CURRENCY],
    sorts: &[
        "day",
        "currency",
        "orders",
        "gross_minor",
        "refunds",
        "refunded_minor",
        "net_minor",
    ],
    default_sort: "day",
    bare_key_cursor: false,
};

/// `read_model.product_sales`.
pub static PRODUCT_SALES: ReadModel = ReadModel {
    path: "product-sales",
    table: "product_sales",
    columns: &[
        col("sku", Text),
        col("currency", Text),
        col("orders", Int4),
        col("units", Int8),
        col("revenue_minor", Int8),
        col("first_sold_at", Timestamp),
        col("last_sold_at", Timestamp),
    ],
    key: &["sku", "currency"],
    time: Some("last_sold_at"),
    filters: &[eq("sku"), CURRENCY],
    sorts: &[
        "sku",
        "currency",
        "orders",
        "units",
        "revenue_minor",
        "first_sold_at",
        "last_sold_at",
    ],
    default_sort: "sku",
    bare_key_cursor: false,
};

/// `read_model.customer_summary`.
pub static CUSTOMER_SUMMARY: ReadModel = ReadModel {
    path: "customer-summary",
    table: "customer_summary",
    columns: &[
        col("customer_id", Kind::Uuid),
        col("currency", Text),
        col("orders", Int4),
        col("paid_orders", Int4),
        col("cancelled_orders", Int4),
        col("paid_minor", Int8),
        col("refunded_minor", Int8),
        // Generated, like daily_sales.net_minor.
        opt("lifetime_value_minor", Int8),
        col("first_order_at", Timestamp),
        col("last_order_at", Timestamp),
    ],
    key: &["customer_id", "currency"],
    time: Some("last_order_at"),
    filters: &[eq("customer_id"), CURRENCY],
    sorts: &[
        "customer_id",
        "currency",
        "orders",
        "paid_orders",
        "cancelled_orders",
        "paid_minor",
        "refunded_minor",
        "lifetime_value_minor",
        "first_order_at",
        "last_order_at",
    ],
    default_sort: "customer_id",
    bare_key_cursor: false,
};

/// `read_model.fulfilment`.
pub static FULFILMENT: ReadModel = ReadModel {
    path: "fulfilment",
    table: "fulfilment",
    columns: &[
        col("order_id", Kind::Uuid),
        col("customer_id", Kind::Uuid),
        col("paid_at", Timestamp),
        opt("shipped_at", Timestamp),
        opt("delivered_at", Timestamp),
        opt("shipment_id", Text),
        opt("carrier", Text),
        opt("paid_to_shipped_seconds", Float8),
        opt("shipped_to_delivered_seconds", Float8),
    ],
    key: &["order_id"],
    time: Some("paid_at"),
    filters: &[eq("order_id"), eq("customer_id"), eq("carrier")],
    sorts: &[
        "order_id",
        "customer_id",
        "paid_at",
        "shipped_at",
        "delivered_at",
        "carrier",
        "paid_to_shipped_seconds",
        "shipped_to_delivered_seconds",
    ],
    default_sort: "paid_at",
    bare_key_cursor: false,
};

/// Every read model the API lists, each at `GET /<path>`.
pub static MODELS: [&ReadModel; 7] = [
    &ORDERS,
    &ORDER_LINES,
    &ORDER_TIMELINE,
    &DAILY_SALES,
    &PRODUCT_SALES,
    &CUSTOMER_SUMMARY,
    &FULFILMENT,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn is_identifier(name: &str) -> bool {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }

    #[test]
    fn every_descriptor_names_only_its_own_columns_and_plain_identifiers() {
        for model in MODELS {
            assert!(is_identifier(model.table), "{}", model.table);
            for column in model.columns {
                assert!(is_identifier(column.name), "{}", column.name);
            }
            let default_sort = model.default_sort.trim_start_matches('-');
            let named = model
                .key
                .iter()
                .chain(model.time.iter())
                .chain(model.sorts)
                .chain(model.filters.iter().map(|f| &f.column))
                .chain(std::iter::once(&default_sort));
            for name in named {
                assert!(
                    model.column(name).is_some(),
                    "{}: no column {name}",
                    model.path
                );
            }
            for key in model.key {
                assert!(!model.column(key).unwrap().nullable, "{}.{key}", model.path);
            }
            if let Some(time) = model.time {
                let kind = model.column(time).unwrap().kind;
                assert!(matches!(kind, Kind::Timestamp | Kind::Date), "{time}");
            }
            assert!(
                model
                    .sorts
                    .contains(&model.default_sort.trim_start_matches('-')),
                "{}: the default sort is sortable",
                model.path
            );
            assert!(!model.bare_key_cursor || model.key.len() == 1);
        }
    }

    #[test]
    fn the_reference_documents_every_route_filter_and_sort_column() {
        let reference = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/query-api.md"
        ));
        for model in MODELS {
            let heading = format!("### `GET /{}`", model.path);
            let section = reference
                .split(&heading)
                .nth(1)
                .unwrap_or_else(|| panic!("docs/query-api.md has no {heading}"));
            let section = section.split("\n### ").next().unwrap();
            let row = |name: &str| {
                section
                    .lines()
                    .find(|l| l.starts_with(&format!("| {name} |")))
                    .unwrap_or_else(|| panic!("{heading}: no row {name}"))
                    .to_owned()
            };
            for sort in model.sorts {
                assert!(
                    row("sort columns").contains(&format!("`{sort}`")),
                    "{heading}: {sort}"
                );
            }
            for filter in model.filters {
                assert!(
                    row("filters").contains(&format!("`{}`", filter.column)),
                    "{heading}: {}",
                    filter.column
                );
                if let Check::OneOf(values) = filter.check {
                    for value in values {
                        assert!(
                            row("filters").contains(&format!("`{value}`")),
                            "{heading}: {value}"
                        );
                    }
                }
            }
            let time = row("`from`/`to` on");
            match model.time {
                Some(column) => assert!(time.contains(&format!("`{column}`")), "{heading}"),
                None => assert!(time.contains('—'), "{heading}"),
            }
            assert!(
                row("default sort").contains(&format!("`{}`", model.default_sort)),
                "{heading}"
            );
            let key: Vec<String> = model.key.iter().map(|k| format!("`{k}`")).collect();
            assert!(row("key").contains(&key.join(", ")), "{heading}");
        }
    }

    #[test]
    fn values_print_as_they_parse() {
        let cases = [
            (Kind::Uuid, "0190a4c4-5a1b-7cde-8f00-0123456789ab"),
            (Kind::Text, "TEA-1"),
            (Kind::Int8, "-42"),
            (Kind::Float8, "3600.25"),
            (Kind::Timestamp, "2024-05-01T12:30:00.123456Z"),
            (Kind::Timestamp, "2024-05-01T12:30:00Z"),
            (Kind::Date, "2024-05-01"),
        ];
        for (kind, text) in cases {
            assert_eq!(kind.parse(text).unwrap().to_string(), text, "{kind:?}");
        }
        assert_eq!(
            Kind::Timestamp.parse("2024-05-01").unwrap().to_string(),
            "2024-05-01T00:00:00Z"
        );
        assert_eq!(
            Kind::Timestamp
                .parse("2024-05-01T14:00:00+02:00")
                .unwrap()
                .to_string(),
            "2024-05-01T12:00:00Z"
        );
        for (kind, text) in [
            (Kind::Uuid, "bob"),
            (Kind::Int4, "1.5"),
            (Kind::Float8, "NaN"),
            (Kind::Timestamp, "yesterday"),
            (Kind::Date, "2024-13-01"),
        ] {
            assert!(kind.parse(text).is_err(), "{kind:?} {text}");
        }
    }

    #[test]
    fn rows_serialize_in_column_order_with_nulls() {
        let row = Row {
            model: &DAILY_SALES,
            values: vec![
                Value::Date(NaiveDate::from_ymd_opt(2024, 5, 1).unwrap()),
                Value::Text("EUR".into()),
                Value::Int(2),
                Value::Int(300),
                Value::Int(0),
                Value::Int(0),
                Value::Null,
            ],
        };
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"day":"2024-05-01","currency":"EUR","orders":2,"gross_minor":300,"refunds":0,"refunded_minor":0,"net_minor":null}"#
        );
    }
}
