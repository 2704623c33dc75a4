//! The analysts' query API: every read model listed, filtered, sorted, paged
//! with cursors and exported as CSV; `/projections` with a live projector,
//! one catching up, and Kafka unreachable.
//!
//! Read models other than `orders` are seeded with plain SQL: these tests are
//! about the query layer, not the projector.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use tributary::Role;
use tributary_platform::{
    Secret,
    auth::{Scope, TokenSettings},
    http::serve_on,
    kafka::KafkaSettings,
};
use tributary_query::{
    QuerySettings, Watermarks,
    model::{Kind, MODELS},
};
use tributary_schemas::Topic;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, order_body, problem, test_settings};

// ---------------------------------------------------------------------------
// Seeding and reading

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, day, hour, minute, 0).unwrap()
}

/// An order as seeded into `read_model.orders`.
#[derive(Debug, Clone)]
struct Seeded {
    id: Uuid,
    customer: Uuid,
    status: &'static str,
    currency: &'static str,
    total: i64,
    placed_at: DateTime<Utc>,
    paid_at: Option<DateTime<Utc>>,
}

/// `n` orders with many ties in total, placed_at and paid_at (half NULL),
/// over three customers and two currencies.
async fn seed_orders(app: &TestApp, n: usize) -> Vec<Seeded> {
    let customers = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let mut seeded = Vec::new();
    for i in 0..n {
        let status = ["placed", "paid", "cancelled", "paid"][i % 4];
        let order = Seeded {
            id: Uuid::now_v7(),
            customer: customers[i % 3],
            status,
            currency: if i % 5 == 0 { "USD" } else { "EUR" },
            total: [300, 100, 200][(i * 7) % 3],
            placed_at: at(1 + (i / 10) as u32, (i % 10 / 2) as u32, 0),
            paid_at: (status == "paid").then(|| at(10, (i % 3) as u32, 0)),
        };
        sqlx::query(
            "INSERT INTO read_model.orders (order_id, customer_id, status, currency, total_minor,
                 line_count, item_count, placed_at, paid_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 1, 2, $6, $7, $6)",
        )
        .bind(order.id)
        .bind(order.customer)
        .bind(order.status)
        .bind(order.currency)
        .bind(order.total)
        .bind(order.placed_at)
        .bind(order.paid_at)
        .execute(&app.app.pool)
        .await
        .unwrap();
        seeded.push(order);
    }
    seeded
}

async fn exec(app: &TestApp, sql: &'static str) {
    sqlx::raw_sql(sql).execute(&app.app.pool).await.unwrap();
}

/// GETs `path` from the query API, expecting 200 and JSON.
async fn get(app: &TestApp, path: &str) -> Value {
    let response = app
        .http
        .get(format!("{}{path}", app.query))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The items of one page.
async fn items(app: &TestApp, path: &str) -> Vec<Value> {
    get(app, path).await["items"].as_array().unwrap().clone()
}

fn strings(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| match &i[field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Every row of a list, following `next` with pages of `limit`; also returns
/// how many pages it took.
async fn all_pages(app: &TestApp, path_and_query: &str, limit: usize) -> (Vec<Value>, usize) {
    let join = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("{path_and_query}{join}limit={limit}");
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let page = get(app, &path).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        rows.extend(items.iter().cloned());
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(items.len(), limit, "only full pages have a next");
                after = Some(next.to_owned());
            }
            None => return (rows, pages),
        }
        assert!(pages < 1000, "paging does not end");
    }
}

/// The seeded orders in the order `sort` (`col` or `-col`) gives: the
/// column (NULLs last ascending), then the id; descending is the reverse.
fn expected_order(orders: &[Seeded], sort: &str) -> Vec<String> {
    let descending = sort.starts_with('-');
    let mut sorted = orders.to_vec();
    sorted.sort_by(|a, b| {
        let by = match sort.trim_start_matches('-') {
            "total_minor" => a.total.cmp(&b.total),
            "placed_at" => a.placed_at.cmp(&b.placed_at),
            // None last ascending.
            "paid_at" => match (a.paid_at, b.paid_at) {
                (Some(a), Some(b)) => a.cmp(&b),
                (a, b) => b.is_some().cmp(&a.is_some()),
            },
            "order_id" => std::cmp::Ordering::Equal,
            other => panic!("no expectation for {other}"),
        };
        by.then(a.id.cmp(&b.id))
    });
    if descending {
        sorted.reverse();
    }
    sorted.iter().map(|o| o.id.to_string()).collect()
}

/// A minimal RFC 4180 reader: quoted fields, doubled quotes, CRLF.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && record.is_empty(), "CSV ends with CRLF");
    records
}

/// GETs a CSV export: its content type and records (header first).
async fn csv(app: &TestApp, path: &str, accept: Option<&str>) -> (String, Vec<Vec<String>>) {
    let mut request = app.http.get(format!("{}{path}", app.query));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, parse_csv(&response.text().await.unwrap()))
}

/// A JSON value as CSV holds it: text as is, NULL empty.
fn as_csv_field(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const ANALYST_SEED: &str = r#"
INSERT INTO read_model.order_lines (order_id, line_no, sku, quantity, unit_price_minor, currency) VALUES
  ('00000000-0000-7000-8000-000000000001', 1, 'TEA-1', 2, 1250, 'EUR'),
  ('00000000-0000-7000-8000-000000000001', 2, 'MUG, "big"', 1, 899, 'EUR'),
  ('00000000-0000-7000-8000-000000000002', 1, 'TEA-1', 5, 1250, 'EUR'),
  ('00000000-0000-7000-8000-000000000003', 1, 'TEA-1', 1, 1400, 'USD');
INSERT INTO read_model.order_timeline (order_id, event_type, occurred_at, reference, amount_minor, currency) VALUES
  ('00000000-0000-7000-8000-000000000001', 'OrderPlaced', '2024-05-01T10:00:00Z', NULL, 3399, 'EUR'),
  ('00000000-0000-7000-8000-000000000001', 'OrderPaid', '2024-05-01T10:05:00Z', 'pay-1', 3399, 'EUR'),
  ('00000000-0000-7000-8000-000000000001', 'OrderShipped', '2024-05-02T09:00:00Z', 'ship-1', NULL, NULL),
  ('00000000-0000-7000-8000-000000000002', 'OrderPlaced', '2024-05-01T11:00:00Z', NULL, 6250, 'EUR');
INSERT INTO read_model.daily_sales (day, currency, orders, gross_minor, refunds, refunded_minor) VALUES
  ('2024-05-01', 'EUR', 2, 9649, 0, 0),
  ('2024-05-01', 'USD', 1, 1400, 0, 0),
  ('2024-05-02', 'EUR', 1, 1000, 1, 400),
  ('2024-05-03', 'EUR', 3, 5000, 0, 0);
INSERT INTO read_model.product_sales (sku, currency, orders, units, revenue_minor, first_sold_at, last_sold_at) VALUES
  ('TEA-1', 'EUR', 2, 7, 8750, '2024-05-01T10:05:00Z', '2024-05-03T08:00:00Z'),
  ('TEA-1', 'USD', 1, 1, 1400, '2024-05-01T12:00:00Z', '2024-05-01T12:00:00Z'),
  ('MUG, "big"', 'EUR', 1, 1, 899, '2024-05-01T10:05:00Z', '2024-05-01T10:05:00Z');
INSERT INTO read_model.customer_summary (customer_id, currency, orders, paid_orders, cancelled_orders,
    paid_minor, refunded_minor, first_order_at, last_order_at) VALUES
  ('00000000-0000-7000-8000-0000000000c1', 'EUR', 3, 2, 1, 9649, 400, '2024-04-01T00:00:00Z', '2024-05-02T00:00:00Z'),
  ('00000000-0000-7000-8000-0000000000c2', 'EUR', 1, 1, 0, 20000, 0, '2024-05-01T00:00:00Z', '2024-05-01T00:00:00Z'),
  ('00000000-0000-7000-8000-0000000000c2', 'USD', 1, 1, 0, 1400, 0, '2024-05-01T12:00:00Z', '2024-05-01T12:00:00Z');
INSERT INTO read_model.fulfilment (order_id, customer_id, paid_at, shipped_at, delivered_at, shipment_id, carrier,
    paid_to_shipped_seconds, shipped_to_delivered_seconds) VALUES
  ('00000000-0000-7000-8000-000000000001', '00000000-0000-7000-8000-0000000000c1', '2024-05-01T10:05:00Z',
   '2024-05-02T09:00:00Z', '2024-05-03T09:00:00Z', 'ship-1', 'DHL', 82500, 86400),
  ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-0000000000c1', '2024-05-01T11:00:00Z',
   '2024-05-01T11:30:00Z', NULL, 'ship-2', 'UPS', 1800.5, NULL),
  ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-0000000000c2', '2024-05-02T08:00:00Z',
   NULL, NULL, NULL, NULL, NULL, NULL);
"#;

// ---------------------------------------------------------------------------
// Lists, filters, sorting

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_descriptor_matches_its_table_in_the_migrated_schema() {
    let app = TestApp::spawn(&[]).await;
    for model in MODELS {
        let columns: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, is_nullable::text
             FROM information_schema.columns
             WHERE table_schema = 'read_model' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(model.table)
        .fetch_all(&app.app.pool)
        .await
        .unwrap();
        let described: Vec<(String, String, String)> = model
            .columns
            .iter()
            .map(|c| {
                let sql_type = match c.kind {
                    Kind::Uuid => "uuid",
                    Kind::Text if c.name == "currency" => "character",
                    Kind::Text => "text",
                    Kind::Int4 => "integer",
                    Kind::Int8 => "bigint",
                    Kind::Float8 => "double precision",
                    Kind::Timestamp => "timestamp with time zone",
                    Kind::Date => "date",
                };
                let nullable = if c.nullable { "YES" } else { "NO" };
                (c.name.to_owned(), sql_type.to_owned(), nullable.to_owned())
            })
            .collect();
        assert_eq!(described, columns, "read_model.{}", model.table);
        let key: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = ('read_model.' || $1)::regclass AND i.indisprimary
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
        )
        .bind(model.table)
        .fetch_all(&app.app.pool)
        .await
        .unwrap();
        assert_eq!(key, model.key, "primary key of read_model.{}", model.table);
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_filter_by_status_customer_currency_and_a_half_open_time_range() {
    let app = TestApp::spawn(&[Role::Query]).await;
    let orders = seed_orders(&app, 40).await;
    let ids = |keep: &dyn Fn(&Seeded) -> bool| -> HashSet<String> {
        orders
            .iter()
            .filter(|o| keep(o))
            .map(|o| o.id.to_string())
            .collect()
    };
    let listed = |items: Vec<Value>| -> HashSet<String> {
        strings(&items, "order_id").into_iter().collect()
    };

    let paid = items(&app, "/orders?status=paid&limit=1000").await;
    assert_eq!(listed(paid.clone()), ids(&|o| o.status == "paid"));
    assert!(paid.iter().all(|o| o["paid_at"].is_string()));

    let customer = orders[1].customer;
    let theirs = items(
        &app,
        &format!("/orders?customer_id={customer}&currency=USD&limit=1000"),
    )
    .await;
    let expected = ids(&|o| o.customer == customer && o.currency == "USD");
    assert!(!expected.is_empty());
    assert_eq!(listed(theirs), expected);

    // from is inclusive, to exclusive: orders placed at exactly 2024-05-02T00:00Z
    // are in, at 2024-05-03T00:00Z out.
    let range = items(
        &app,
        "/orders?from=2024-05-02T00:00:00Z&to=2024-05-03&limit=1000",
    )
    .await;
    let expected = ids(&|o| o.placed_at >= at(2, 0, 0) && o.placed_at < at(3, 0, 0));
    assert_eq!(expected.len(), 10);
    assert_eq!(listed(range), expected);

    // Where the order came from (OrderPlaced v2); NULL matches no channel.
    sqlx::query("UPDATE read_model.orders SET channel = 'app' WHERE order_id = ANY($1)")
        .bind([orders[5].id, orders[7].id])
        .execute(&app.app.pool)
        .await
        .unwrap();
    let app_orders = items(&app, "/orders?channel=app").await;
    assert_eq!(
        listed(app_orders),
        ids(&|o| o.id == orders[5].id || o.id == orders[7].id)
    );

    // One order, and the row as the list shows it.
    let one = get(&app, &format!("/orders/{}", orders[3].id)).await;
    assert_eq!(one["order_id"], orders[3].id.to_string());
    assert_eq!(one["total_minor"], orders[3].total);
    assert_eq!(one["placed_at"], "2024-05-01T01:00:00Z");
    assert_eq!(one["cancelled_at"], Value::Null);
    assert_eq!(one["channel"], Value::Null);
    let keys: Vec<&String> = one.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), tributary_query::model::ORDERS.columns.len());
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorting_both_ways_orders_by_the_column_then_the_key() {
    let app = TestApp::spawn(&[Role::Query]).await;
    let orders = seed_orders(&app, 30).await;
    for sort in [
        "total_minor",
        "-total_minor",
        "placed_at",
        "-placed_at",
        "paid_at",
        "-paid_at",
        "-order_id",
    ] {
        let listed = items(&app, &format!("/orders?sort={sort}&limit=1000")).await;
        assert_eq!(
            strings(&listed, "order_id"),
            expected_order(&orders, sort),
            "sort={sort}"
        );
    }
    // The default is by order_id.
    let listed = items(&app, "/orders?limit=1000").await;
    assert_eq!(
        strings(&listed, "order_id"),
        expected_order(&orders, "order_id")
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_the_cursor_under_a_sort_with_ties_loses_and_repeats_no_row() {
    let app = TestApp::spawn(&[Role::Query]).await;
    let orders = seed_orders(&app, 53).await;
    for sort in [
        "total_minor",
        "-total_minor",
        "paid_at",
        "-paid_at",
        "-placed_at",
    ] {
        let (rows, pages) = all_pages(&app, &format!("/orders?sort={sort}"), 7).await;
        assert_eq!(
            strings(&rows, "order_id"),
            expected_order(&orders, sort),
            "sort={sort}"
        );
        assert_eq!(pages, 53_usize.div_ceil(7), "sort={sort}");
    }
    // Filters and a cursor together.
    let (rows, _) = all_pages(&app, "/orders?status=paid&sort=-total_minor", 4).await;
    let paid: Vec<Seeded> = orders
        .iter()
        .filter(|o| o.status == "paid")
        .cloned()
        .collect();
    assert_eq!(
        strings(&rows, "order_id"),
        expected_order(&paid, "-total_minor")
    );

    // Clients of /orders from before cursors: after = the last order_id, next_after.
    let first = get(&app, "/orders?limit=10").await;
    let ids = expected_order(&orders, "order_id");
    assert_eq!(first["next_after"], ids[9]);
    let second = items(&app, &format!("/orders?limit=10&after={}", ids[9])).await;
    assert_eq!(strings(&second, "order_id"), ids[10..20]);
    let last = get(&app, &format!("/orders?limit=10&after={}", ids[49])).await;
    assert_eq!(last["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        (&last["next"], &last["next_after"]),
        (&Value::Null, &Value::Null)
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_analyst_read_model_lists_filters_and_sorts() {
    let app = TestApp::spawn(&[Role::Query]).await;
    exec(&app, ANALYST_SEED).await;
    let order_1 = "00000000-0000-7000-8000-000000000001";
    sqlx::query(
        "INSERT INTO read_model.orders (order_id, customer_id, status, currency, total_minor,
             line_count, item_count, placed_at, updated_at)
         VALUES ($1::uuid, $1::uuid, 'shipped', 'EUR', 3399, 2, 3, now(), now())",
    )
    .bind(order_1)
    .execute(&app.app.pool)
    .await
    .unwrap();

    // Order lines: by SKU (with a comma and quotes in it), most expensive
    // first; ties in the reverse order of the key, as the whole order is reversed.
    let lines = items(&app, "/order-lines?sku=TEA-1&sort=-unit_price_minor").await;
    assert_eq!(
        strings(&lines, "unit_price_minor"),
        ["1400", "1250", "1250"]
    );
    assert_eq!(
        strings(&lines, "order_id")[1..],
        ["00000000-0000-7000-8000-000000000002", order_1]
    );
    let mug = items(&app, "/order-lines?sku=MUG,%20%22big%22").await;
    assert_eq!(mug.len(), 1);
    assert_eq!(mug[0]["line_no"], 2);

    // One order's timeline, oldest first; 404 for an order not in the read model.
    let timeline = items(&app, &format!("/orders/{order_1}/timeline")).await;
    assert_eq!(
        strings(&timeline, "event_type"),
        ["OrderPlaced", "OrderPaid", "OrderShipped"]
    );
    assert_eq!(timeline[2]["amount_minor"], Value::Null);
    let newest = items(
        &app,
        &format!("/orders/{order_1}/timeline?sort=-occurred_at&limit=1"),
    )
    .await;
    assert_eq!(strings(&newest, "event_type"), ["OrderShipped"]);
    let response = app
        .http
        .get(format!("{}/orders/{}/timeline", app.query, Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    problem(response, 404).await;
    // Across orders, in a time range.
    let placed = items(
        &app,
        "/order-timeline?event_type=OrderPlaced&from=2024-05-01T10:30:00Z",
    )
    .await;
    assert_eq!(
        strings(&placed, "order_id"),
        ["00000000-0000-7000-8000-000000000002"]
    );

    // Daily sales: days in [from, to), net computed by the table.
    let days = items(
        &app,
        "/daily-sales?currency=EUR&from=2024-05-01&to=2024-05-03",
    )
    .await;
    assert_eq!(strings(&days, "day"), ["2024-05-01", "2024-05-02"]);
    assert_eq!(days[1]["net_minor"], 600);
    let best = items(&app, "/daily-sales?sort=-gross_minor&limit=2").await;
    assert_eq!(
        (strings(&best, "day"), strings(&best, "currency")),
        (
            vec!["2024-05-01".to_owned(), "2024-05-03".to_owned()],
            vec!["EUR".to_owned(), "EUR".to_owned()]
        )
    );

    // Product sales: by revenue; from/to bound last_sold_at.
    let products = items(&app, "/product-sales?sort=-revenue_minor").await;
    assert_eq!(strings(&products, "revenue_minor"), ["8750", "1400", "899"]);
    let recent = items(&app, "/product-sales?from=2024-05-02").await;
    assert_eq!(
        (strings(&recent, "sku"), strings(&recent, "currency")),
        (vec!["TEA-1".to_owned()], vec!["EUR".to_owned()])
    );

    // Customer summary: lifetime value is paid minus refunded.
    let customers = items(&app, "/customer-summary?sort=-lifetime_value_minor").await;
    assert_eq!(
        strings(&customers, "lifetime_value_minor"),
        ["20000", "9249", "1400"]
    );
    let c2 = items(
        &app,
        "/customer-summary?customer_id=00000000-0000-7000-8000-0000000000c2&currency=USD",
    )
    .await;
    assert_eq!(c2.len(), 1);
    assert_eq!(c2[0]["paid_minor"], 1400);

    // Fulfilment: NULLs last ascending, first descending; floats stay floats.
    let fastest = items(&app, "/fulfilment?sort=paid_to_shipped_seconds").await;
    assert_eq!(
        strings(&fastest, "order_id"),
        [
            "00000000-0000-7000-8000-000000000002",
            order_1,
            "00000000-0000-7000-8000-000000000003"
        ]
    );
    assert_eq!(fastest[0]["paid_to_shipped_seconds"], 1800.5);
    let slowest = items(&app, "/fulfilment?sort=-paid_to_shipped_seconds").await;
    assert_eq!(
        strings(&slowest, "order_id"),
        [
            "00000000-0000-7000-8000-000000000003",
            order_1,
            "00000000-0000-7000-8000-000000000002"
        ]
    );
    let dhl = items(&app, "/fulfilment?carrier=DHL").await;
    assert_eq!(dhl.len(), 1);
    assert_eq!(dhl[0]["delivered_at"], "2024-05-03T09:00:00Z");
    let paid_first_day = items(
        &app,
        "/fulfilment?from=2024-05-01&to=2024-05-02&sort=-paid_at",
    )
    .await;
    assert_eq!(
        strings(&paid_first_day, "order_id"),
        ["00000000-0000-7000-8000-000000000002", order_1]
    );

    // A cursor over a nullable column with NULLs on both sides of a page.
    for sort in ["shipped_at", "-shipped_at", "carrier", "-delivered_at"] {
        let (paged, _) = all_pages(&app, &format!("/fulfilment?sort={sort}"), 1).await;
        let whole = items(&app, &format!("/fulfilment?sort={sort}")).await;
        assert_eq!(paged, whole, "sort={sort}");
        assert_eq!(paged.len(), 3);
    }
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// CSV

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_export_holds_the_same_rows_as_the_json_pages() {
    let app = TestApp::spawn(&[Role::Query]).await;
    seed_orders(&app, 45).await;
    exec(&app, ANALYST_SEED).await;
    for list in [
        "/orders?currency=EUR&sort=-placed_at&from=2024-05-02",
        "/orders?status=paid&sort=paid_at",
        "/fulfilment?sort=-shipped_at",
        "/order-lines?sort=sku",
        "/product-sales",
        "/daily-sales?sort=-day",
        "/customer-summary?currency=EUR",
    ] {
        let (json, _) = all_pages(&app, list, 4).await;
        let join = if list.contains('?') { '&' } else { '?' };
        let (content_type, records) = csv(&app, &format!("{list}{join}format=csv"), None).await;
        assert_eq!(content_type, "text/csv; charset=utf-8; header=present");
        let model = MODELS
            .iter()
            .find(|m| list[1..].split('?').next() == Some(m.path))
            .unwrap();
        let header: Vec<&str> = model.columns.iter().map(|c| c.name).collect();
        assert_eq!(records[0], header, "{list}");
        let from_json: Vec<Vec<String>> = json
            .iter()
            .map(|row| header.iter().map(|c| as_csv_field(&row[*c])).collect())
            .collect();
        // Floats print the same in both but for a whole number (1.0 vs 1).
        let normal = |rows: Vec<Vec<String>>| -> Vec<Vec<String>> {
            rows.into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|f| f.strip_suffix(".0").map(str::to_owned).unwrap_or(f))
                        .collect()
                })
                .collect()
        };
        assert!(!from_json.is_empty(), "{list}");
        assert_eq!(normal(records[1..].to_vec()), normal(from_json), "{list}");

        // Accept: text/csv is the same export.
        let (_, accepted) = csv(&app, list, Some("text/csv")).await;
        assert_eq!(accepted, records, "{list}");
    }
    // A header row alone when nothing matches.
    let (_, records) = csv(&app, "/orders?status=refunded&format=csv", None).await;
    assert_eq!(records.len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_export_is_streamed_and_capped() {
    let mut settings = test_settings().await;
    settings.query.csv_max_rows = 2500;
    let app = TestApp::spawn_with(settings, &[Role::Query]).await;
    sqlx::query(
        "INSERT INTO read_model.orders (order_id, customer_id, status, currency, total_minor,
             line_count, item_count, placed_at, updated_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'placed', 'EUR', n, 1, 1,
                '2024-05-01'::timestamptz + n * interval '1 minute', now()
         FROM generate_series(1, 3000) AS n",
    )
    .execute(&app.app.pool)
    .await
    .unwrap();

    // Over the cap: refused before anything is sent.
    let response = app
        .http
        .get(format!("{}/orders?format=csv", app.query))
        .send()
        .await
        .unwrap();
    let refused = problem(response, 400).await;
    assert_eq!(refused["title"], "Export too large");
    assert_eq!(refused["max_rows"], 2500);

    // Within the cap: in many chunks, every row once, in order.
    let mut response = app
        .http
        .get(format!(
            "{}/orders?format=csv&from=2024-05-01T10:00:00Z&sort=total_minor",
            app.query
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut body, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = response.chunk().await.unwrap() {
        chunks += 1;
        body.extend_from_slice(&chunk);
    }
    assert!(chunks > 3, "streamed in {chunks} chunks");
    let records = parse_csv(std::str::from_utf8(&body).unwrap());
    let totals: Vec<i64> = records[1..].iter().map(|r| r[4].parse().unwrap()).collect();
    assert_eq!(totals, (600..=3000).collect::<Vec<i64>>());

    // limit takes the first rows of a larger result, up to the cap.
    let (_, records) = csv(
        &app,
        "/orders?format=csv&sort=-total_minor&limit=2500",
        None,
    )
    .await;
    assert_eq!(records.len(), 2501);
    assert_eq!(records[1][4], "3000");
    let response = app
        .http
        .get(format!("{}/orders?format=csv&limit=2501", app.query))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response, 400).await["field"], "limit");
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Bad requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_parameter_is_a_400_naming_it_and_a_missing_token_or_scope_is_refused() {
    let mut settings = test_settings().await;
    let storefront = "storefront-token-without-query";
    settings.auth.tokens.insert(
        "storefront".to_owned(),
        TokenSettings {
            secret: Secret::new(storefront),
            scopes: [Scope::Commands].into_iter().collect(),
        },
    );
    let app = TestApp::spawn_with(settings, &[Role::Query]).await;
    let orders = seed_orders(&app, 3).await;
    let by_total = get(&app, "/orders?sort=total_minor&limit=1").await["next"]
        .as_str()
        .unwrap()
        .to_owned();
    let order = orders[0].id;
    for (path, field) in [
        ("/orders?colour=red".to_owned(), "colour"),
        ("/orders?status=lost".to_owned(), "status"),
        ("/orders?status=paid&status=placed".to_owned(), "status"),
        ("/orders?customer_id=bob".to_owned(), "customer_id"),
        ("/orders?currency=euro".to_owned(), "currency"),
        ("/orders?from=yesterday".to_owned(), "from"),
        ("/orders?to=2024-02-30".to_owned(), "to"),
        ("/orders?from=2024-05-02&to=2024-05-01".to_owned(), "to"),
        ("/orders?sort=password".to_owned(), "sort"),
        ("/orders?sort=-".to_owned(), "sort"),
        ("/orders?after=not-a-cursor".to_owned(), "after"),
        (
            format!("/orders?sort=-total_minor&after={by_total}"),
            "after",
        ),
        (
            format!("/fulfilment?sort=total_minor&after={by_total}"),
            "sort",
        ),
        (format!("/fulfilment?after={by_total}"), "after"),
        ("/orders?limit=0".to_owned(), "limit"),
        ("/orders?limit=1001".to_owned(), "limit"),
        ("/orders?limit=-5".to_owned(), "limit"),
        ("/orders?format=xlsx".to_owned(), "format"),
        ("/orders/not-a-uuid".to_owned(), "order_id"),
        ("/orders/not-a-uuid/timeline".to_owned(), "order_id"),
        (
            format!("/orders/{order}/timeline?order_id={order}"),
            "order_id",
        ),
        ("/order-lines?from=2024-05-01".to_owned(), "from"),
        ("/order-lines?sku=".to_owned(), "sku"),
        ("/daily-sales?from=2024-05-01T00:00:00Z".to_owned(), "from"),
        ("/daily-sales?sort=sku".to_owned(), "sort"),
        ("/product-sales?currency=EU".to_owned(), "currency"),
        ("/customer-summary?customer_id=7".to_owned(), "customer_id"),
        (
            "/fulfilment?paid_to_shipped_seconds=1".to_owned(),
            "paid_to_shipped_seconds",
        ),
        ("/order-timeline?order_id=x".to_owned(), "order_id"),
        (
            "/order-timeline?event_type=OrderLost".to_owned(),
            "event_type",
        ),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.query))
            .send()
            .await
            .unwrap();
        let problem = problem(response, 400).await;
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }

    let anonymous = reqwest::Client::new();
    let mut routes: Vec<String> = MODELS.iter().map(|m| format!("/{}", m.path)).collect();
    routes.extend([
        format!("/orders/{order}"),
        format!("/orders/{order}/timeline"),
        "/projections".to_owned(),
        "/orders?format=csv".to_owned(),
    ]);
    for route in routes {
        let response = anonymous
            .get(format!("{}{route}", app.query))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{route}");
        let refused = problem(response, 401).await;
        assert_eq!(refused["title"], "Unauthorized", "{route}");
        let response = anonymous
            .get(format!("{}{route}", app.query))
            .bearer_auth("not-the-token-at-all")
            .send()
            .await
            .unwrap();
        problem(response, 401).await;
        let response = anonymous
            .get(format!("{}{route}", app.query))
            .bearer_auth(storefront)
            .send()
            .await
            .unwrap();
        let forbidden = problem(response, 403).await;
        assert!(
            forbidden["detail"]
                .as_str()
                .unwrap()
                .contains("`query` scope"),
            "{forbidden}"
        );
    }
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// /projections

async fn projection(app: &TestApp) -> Value {
    let report = get(app, "/projections").await;
    let projections = report["projections"].as_array().unwrap();
    assert_eq!(projections.len(), tributary_projector::PROJECTIONS.len());
    assert!(report["checked_at"].is_string());
    projections
        .iter()
        .find(|p| p["name"] == "orders")
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_show_a_live_projector_with_no_lag_and_a_rebuild_in_progress() {
    let started = Utc::now();
    let app = TestApp::spawn(&[Role::Api, Role::Relay, Role::Projector, Role::Query]).await;
    let customer = Uuid::now_v7();
    let mut ids = Vec::new();
    for sku in ["TEA-1", "MUG-2", "SKU-3"] {
        ids.push(
            app.place_order(&order_body(customer, &[(sku, 1, 500)]))
                .await,
        );
    }
    let response = app
        .post(
            &format!("/orders/{}/cancel", ids[0]),
            &json!({"reason": "test"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    eventually(Duration::from_secs(60), "4 events applied", || async {
        (app.stored_offsets().await == 4).then_some(())
    })
    .await;

    let live = eventually(Duration::from_secs(30), "state live", || async {
        let p = projection(&app).await;
        (p["state"] == "live").then_some(p)
    })
    .await;
    assert_eq!(live["lag_messages"], 0);
    assert_eq!(live["lag_seconds"], 0.0);
    assert_eq!(live["rebuild"], Value::Null);
    assert_eq!(live["topics"], json!([app.app.topic(Topic::Orders)]));
    assert_eq!(
        live["tables"],
        json!(tributary_projector::projection("orders").unwrap().tables)
    );
    let last: DateTime<Utc> = live["last_event_at"].as_str().unwrap().parse().unwrap();
    let stored: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(last_event_at) FROM consumer.offsets WHERE consumer = 'orders'",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(Some(last), stored);
    assert!(
        last >= started - chrono::Duration::seconds(1) && last <= Utc::now(),
        "{last}"
    );
    // The list shows what was placed.
    assert_eq!(
        items(
            &app,
            &format!("/orders?customer_id={customer}&status=cancelled")
        )
        .await
        .len(),
        1
    );

    // A rebuild in progress wins over the lag.
    sqlx::query(
        "INSERT INTO projection.rebuilds (projection, build_schema, target_messages, applied_messages)
         VALUES ('orders', 'rebuild_orders_1', 4, 1)",
    )
    .execute(&app.app.pool)
    .await
    .unwrap();
    let rebuilding = projection(&app).await;
    assert_eq!(rebuilding["state"], "rebuilding");
    assert_eq!(rebuilding["rebuild"]["applied_messages"], 1);
    assert_eq!(rebuilding["rebuild"]["target_messages"], 4);
    assert_eq!(rebuilding["rebuild"]["progress"], 0.25);
    assert_eq!(rebuilding["lag_messages"], 0);
    sqlx::query("UPDATE projection.rebuilds SET finished_at = now(), outcome = 'swapped'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(projection(&app).await["state"], "live");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_count_the_lag_from_stored_offsets_or_the_low_watermark() {
    let mut settings = test_settings().await;
    // The whole suite loads the broker: give its watermarks time to answer.
    settings.query.kafka_timeout = Duration::from_secs(10);
    let app = TestApp::spawn_with(settings, &[Role::Api, Role::Relay, Role::Query]).await;
    // Each event is on Kafka before the next command.
    let published = |n: i64| {
        let app = &app;
        async move {
            eventually(Duration::from_secs(30), "published", || async {
                let published: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM commands.outbox WHERE published_at IS NOT NULL",
                )
                .fetch_one(&app.app.pool)
                .await
                .unwrap();
                (published == n).then_some(())
            })
            .await;
        }
    };
    let customer = Uuid::now_v7();
    let order = app
        .place_order(&order_body(customer, &[("TEA-1", 1, 500)]))
        .await;
    published(1).await;
    app.place_order(&order_body(Uuid::now_v7(), &[("TEA-1", 1, 500)]))
        .await;
    published(2).await;
    let response = app
        .post(&format!("/orders/{order}/cancel"), &json!({"reason": "x"}))
        .await;
    assert_eq!(response.status(), 200);
    published(3).await;

    // No projector has stored anything: every message waits.
    let waiting = eventually(Duration::from_secs(60), "a lag of 3", || async {
        let report = projection(&app).await;
        (report["lag_messages"] == 3).then_some(report)
    })
    .await;
    assert_eq!(waiting["state"], "catching_up");
    assert_eq!(waiting["lag_messages"], 3);
    assert_eq!(waiting["last_event_at"], Value::Null);
    assert_eq!(waiting["lag_seconds"], Value::Null);

    // Say the first event of the cancelled order's partition was applied a
    // minute ago: the other two still wait, wherever they are.
    let records = app.read_orders_topic(3).await;
    let partition = records
        .iter()
        .find(|r| r.key == order.to_string())
        .unwrap()
        .partition;
    let first = records
        .iter()
        .filter(|r| r.partition == partition)
        .map(|r| r.offset)
        .min()
        .unwrap();
    sqlx::query(
        "INSERT INTO consumer.offsets (consumer, topic, partition, next_offset, last_event_at)
         VALUES ('orders', $1, $2, $3, now() - interval '60 seconds')",
    )
    .bind(app.app.topic(Topic::Orders))
    .bind(partition)
    .bind(first + 1)
    .execute(&app.app.pool)
    .await
    .unwrap();
    let behind = projection(&app).await;
    assert_eq!(behind["state"], "catching_up");
    assert_eq!(behind["lag_messages"], 2);
    let lag_seconds = behind["lag_seconds"].as_f64().unwrap();
    assert!((60.0..70.0).contains(&lag_seconds), "{lag_seconds}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_answer_from_postgres_with_a_null_lag_when_kafka_does_not_answer() {
    let app = TestApp::spawn(&[]).await;
    sqlx::query(
        "INSERT INTO consumer.offsets (consumer, topic, partition, next_offset, last_event_at)
         VALUES ('orders', $1, 0, 10, '2024-05-01T12:00:00Z')",
    )
    .bind(app.app.topic(Topic::Orders))
    .execute(&app.app.pool)
    .await
    .unwrap();
    // Nothing listens on port 1.
    let nowhere = KafkaSettings {
        topic_prefix: app.app.settings.kafka.topic_prefix.clone(),
        ..KafkaSettings::default()
    };
    let settings = QuerySettings {
        kafka_timeout: Duration::from_millis(300),
        ..QuerySettings::default()
    };
    let router = tributary_query::router(
        app.app.pool.clone(),
        &settings,
        Arc::new(app.app.settings.auth.clone()),
        Watermarks::new(&nowhere, "127.0.0.1:1").unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve_on(listener, router, stop.clone()));

    let asked = Instant::now();
    let response = app
        .http
        .get(format!("http://{addr}/projections"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    let report: Value = response.json().await.unwrap();
    let orders = &report["projections"][0];
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["last_event_at"], "2024-05-01T12:00:00Z");
    assert_eq!(orders["lag_messages"], Value::Null);
    assert_eq!(orders["lag_seconds"], Value::Null);
    assert_eq!(orders["state"], "unknown");
    assert!(
        orders["kafka_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{orders}"
    );
    stop.cancel();
    server.await.unwrap().unwrap();
    app.stop().await.unwrap();
}
