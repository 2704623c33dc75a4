//! A day of shop traffic as order events, and the read models it must give.
//!
//! The expected read models are the projection's own statements applied to
//! the same events in one pass, in a scratch schema, with no Kafka in
//! between: what a run over Kafka must equal whatever crashed, was killed,
//! rebalanced or rebuilt on the way.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng, rngs::StdRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::AssertSqlSafe;
use tributary_registry::ContractIds;
use tributary_schemas::{
    Event, framing,
    orders::{
        OrderCancelled, OrderDelivered, OrderEvent, OrderLine, OrderPaid, OrderPlaced,
        OrderRefunded, OrderShipped,
    },
};
use uuid::Uuid;

use crate::helpers::TestApp;

/// `orders` orders with their lives, interleaved by time, with some events
/// repeated (as a relay may after a crash). Per order, events are in order.
pub(crate) fn traffic(orders: usize, seed: u64) -> Vec<OrderEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = 1_767_225_600_000_i64; // 2026-01-01T00:00:00Z
    let customers: Vec<String> = (0..orders.div_ceil(4).max(1))
        .map(|_| Uuid::now_v7().to_string())
        .collect();
    let mut timed: Vec<(i64, usize, OrderEvent)> = Vec::new();
    let push = |at: i64, event: OrderEvent, timed: &mut Vec<(i64, usize, OrderEvent)>| {
        let n = timed.len();
        timed.push((at, n, event));
    };
    for _ in 0..orders {
        let order_id = Uuid::now_v7().to_string();
        let currency = if rng.random_bool(0.7) { "EUR" } else { "USD" };
        let lines: Vec<OrderLine> = (0..rng.random_range(1..=3))
            .map(|_| OrderLine {
                sku: format!("SKU-{}", rng.random_range(1..=8)),
                quantity: rng.random_range(1..=4),
                unit_price_minor: rng.random_range(100..=5_000),
            })
            .collect();
        let total: i64 = lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_minor)
            .sum();
        // Spread over three days, so daily sales have several rows.
        let mut at = start + rng.random_range(0..3 * 86_400_000);
        push(
            at,
            OrderEvent::Placed(OrderPlaced {
                order_id: order_id.clone(),
                customer_id: customers[rng.random_range(0..customers.len())].clone(),
                currency: currency.into(),
                lines,
                total_minor: total,
                placed_at: at,
                channel: ["web", "app", "api"]
                    .get(rng.random_range(0..4))
                    .map(|c| (*c).into()),
            }),
            &mut timed,
        );
        let mut step = |rng: &mut StdRng| {
            at += rng.random_range(60_000..6 * 3_600_000);
            at
        };
        if rng.random_bool(0.15) {
            let at = step(&mut rng);
            push(
                at,
                OrderEvent::Cancelled(OrderCancelled {
                    order_id,
                    reason: "changed my mind".into(),
                    cancelled_at: at,
                }),
                &mut timed,
            );
            continue;
        }
        if rng.random_bool(0.1) {
            continue; // never paid
        }
        let paid_at = step(&mut rng);
        push(
            paid_at,
            OrderEvent::Paid(OrderPaid {
                order_id: order_id.clone(),
                payment_id: format!("pay-{order_id}"),
                amount_minor: total,
                currency: currency.into(),
                paid_at,
            }),
            &mut timed,
        );
        let shipment_id = format!("shp-{order_id}");
        if rng.random_bool(0.8) {
            let at = step(&mut rng);
            push(
                at,
                OrderEvent::Shipped(OrderShipped {
                    order_id: order_id.clone(),
                    shipment_id: shipment_id.clone(),
                    carrier: ["DHL", "UPS", "PostNL"][rng.random_range(0..3)].into(),
                    shipped_at: at,
                }),
                &mut timed,
            );
            if rng.random_bool(0.8) {
                let at = step(&mut rng);
                push(
                    at,
                    OrderEvent::Delivered(OrderDelivered {
                        order_id: order_id.clone(),
                        shipment_id,
                        delivered_at: at,
                    }),
                    &mut timed,
                );
            }
        }
        if rng.random_bool(0.1) {
            let at = step(&mut rng);
            push(
                at,
                OrderEvent::Refunded(OrderRefunded {
                    order_id: order_id.clone(),
                    refund_id: format!("ref-{order_id}"),
                    amount_minor: total / 2,
                    currency: currency.into(),
                    refunded_at: at,
                }),
                &mut timed,
            );
        }
    }
    timed.sort_by_key(|(at, n, _)| (*at, *n));
    let mut events = Vec::with_capacity(timed.len() + timed.len() / 20);
    for (_, _, event) in timed {
        // One event in twenty is delivered twice in a row.
        if rng.random_bool(0.05) {
            events.push(event.clone());
        }
        events.push(event);
    }
    events
}

/// The Confluent-framed value of `event`.
pub(crate) fn frame(ids: &ContractIds, event: &OrderEvent) -> Vec<u8> {
    fn encode<E: Event>(ids: &ContractIds, event: &E) -> Vec<u8> {
        framing::encode(ids.id_of(E::FULL_NAME).unwrap(), event).unwrap()
    }
    match event {
        OrderEvent::Placed(e) => encode(ids, e),
        OrderEvent::Cancelled(e) => encode(ids, e),
        OrderEvent::Paid(e) => encode(ids, e),
        OrderEvent::Shipped(e) => encode(ids, e),
        OrderEvent::Delivered(e) => encode(ids, e),
        OrderEvent::Refunded(e) => encode(ids, e),
    }
}

/// Publishes `events` to the order topic, keyed by order, in order.
pub(crate) async fn publish(app: &TestApp, producer: &FutureProducer, events: &[OrderEvent]) {
    let ids = app.ids().await;
    let topic = app.app.topic(tributary_schemas::Topic::Orders);
    let sends = events.iter().map(|event| {
        let value = frame(&ids, event);
        let topic = &topic;
        async move {
            producer
                .send(
                    FutureRecord::to(topic)
                        .key(event.order_id())
                        .payload(&value),
                    std::time::Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produced");
        }
    });
    // Sent concurrently but enqueued in order: librdkafka keeps the order per partition.
    futures::future::join_all(sends).await;
}

/// Every table of the orders projection in `schema`, as sorted JSON rows.
pub(crate) async fn snapshot(app: &TestApp, schema: &str) -> BTreeMap<&'static str, String> {
    let mut tables = BTreeMap::new();
    for table in tributary_projector::PROJECTIONS[0].tables {
        let rows: String = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COALESCE(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]')::text FROM {schema}.{table} t"
        )))
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
        tables.insert(*table, rows);
    }
    tables
}

/// The read models `events` must give: the projection's statements over
/// them in one pass, into a scratch schema, batch by batch.
pub(crate) async fn expected(
    app: &TestApp,
    events: &[OrderEvent],
) -> BTreeMap<&'static str, String> {
    let schema = format!("expected_{}", Uuid::new_v4().simple());
    let mut tx = app.app.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in tributary_projector::PROJECTIONS[0].tables {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {schema}.{table} (LIKE read_model.{table} INCLUDING ALL)"
        )))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    for chunk in events.chunks(500) {
        tributary_projector::project(&mut tx, &schema, chunk)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    snapshot(app, &schema).await
}

/// Asserts the live read models equal `expected`, table by table.
pub(crate) async fn assert_read_models_equal(
    app: &TestApp,
    expected: &BTreeMap<&'static str, String>,
) {
    let actual = snapshot(app, "read_model").await;
    for (table, rows) in expected {
        assert!(
            actual[table] == *rows,
            "read_model.{table} differs from the expected rows\n  actual:   {}\n  expected: {}",
            &actual[table][..actual[table].len().min(600)],
            &rows[..rows.len().min(600)]
        );
    }
}

/// How many messages `events` are.
pub(crate) fn messages(events: &[OrderEvent]) -> i64 {
    events.len() as i64
}
