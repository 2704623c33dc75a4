//! Shop traffic on the order topic, and the read models it must give.
//!
//! The expected read models are the projection's own statements applied to
//! the same events in one pass, in a scratch schema, with no Kafka in
//! between: what a run over Kafka must equal whatever crashed, was killed,
//! rebalanced or rebuilt on the way.

use std::collections::BTreeMap;

use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::AssertSqlSafe;
use tributary_schemas::orders::OrderEvent;
use uuid::Uuid;

use crate::helpers::TestApp;

/// `orders` orders with their lives (see `tributary::traffic`).
pub(crate) fn traffic(orders: usize, seed: u64) -> Vec<OrderEvent> {
    tributary::traffic::orders(orders, seed)
}

/// Publishes `events` to the order topic, keyed by order, in order.
pub(crate) async fn publish(app: &TestApp, producer: &FutureProducer, events: &[OrderEvent]) {
    let ids = app.ids().await;
    let topic = app.app.topic(tributary_schemas::Topic::Orders);
    let sends = events.iter().map(|event| {
        let value = tributary::traffic::frame(&ids, event).unwrap();
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
