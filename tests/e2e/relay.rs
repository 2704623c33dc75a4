//! The relay loses nothing and keeps each order's events in order, across a
//! crash mid-backlog and with two relays running at once.

use std::{collections::HashMap, time::Duration};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tributary::Role;
use uuid::Uuid;

use crate::helpers::{Record, TestApp, eventually, order_body, test_settings};

/// A backlog in the outbox: `orders` placed, every other one then cancelled.
async fn backlog(app: &TestApp, orders: usize) {
    for i in 0..orders {
        let order_id = app
            .place_order(&order_body(Uuid::now_v7(), &[("SKU-1", 1, 100 + i as i64)]))
            .await;
        if i % 2 == 0 {
            let response = app
                .post(&format!("/orders/{order_id}/cancel"), &json!({}))
                .await;
            assert_eq!(response.status(), 200);
        }
    }
}

async fn published(app: &TestApp) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE published_at IS NOT NULL), count(*) FROM commands.outbox",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap()
}

/// Every outbox row is on the topic, and each order's events appear in
/// outbox order (duplicates from a crash allowed, reordering not).
async fn assert_topic_matches_outbox(app: &TestApp) {
    let outbox: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT key, event_id FROM commands.outbox ORDER BY id")
            .fetch_all(&app.app.pool)
            .await
            .unwrap();
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for (key, event_id) in &outbox {
        expected
            .entry(key.clone())
            .or_default()
            .push(event_id.to_string());
    }

    let mut records: Vec<Record> = app.read_orders_topic(outbox.len()).await;
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut partitions: HashMap<String, i32> = HashMap::new();
    for record in &records {
        let event_id = record.headers["event_id"].clone();
        let events = seen.entry(record.key.clone()).or_default();
        if !events.contains(&event_id) {
            events.push(event_id);
        }
        let partition = *partitions
            .entry(record.key.clone())
            .or_insert(record.partition);
        assert_eq!(
            partition, record.partition,
            "order {} spread over partitions",
            record.key
        );
    }
    assert_eq!(seen.len(), expected.len(), "every order reached Kafka");
    for (key, events) in &expected {
        assert_eq!(
            seen.get(key),
            Some(events),
            "order {key}: events lost or out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_backlog_loses_nothing_and_keeps_per_order_order() {
    let mut settings = test_settings().await;
    settings.relay.batch_size = 5;
    let app = TestApp::spawn_with(settings, &[Role::Api]).await;
    backlog(&app, 120).await;
    let (_, total) = published(&app).await;
    assert_eq!(total, 180);

    let first = app.app.relay().unwrap();
    let running = tokio::spawn(async move { first.run(CancellationToken::new()).await });
    eventually(Duration::from_secs(30), "some rows published", || async {
        (published(&app).await.0 >= 30).then_some(())
    })
    .await;
    running.abort();
    let _ = running.await;
    let (done, _) = published(&app).await;
    assert!(
        done < total,
        "the relay should die mid-backlog (published {done} of {total})"
    );

    let second = app.app.relay().unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { second.run(stop).await }
    });
    eventually(
        Duration::from_secs(60),
        "the whole outbox published",
        || async {
            let (done, total) = published(&app).await;
            (done == total).then_some(())
        },
    )
    .await;
    stop.cancel();
    running.await.unwrap().unwrap();

    assert_topic_matches_outbox(&app).await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_at_once_publish_everything_in_order() {
    let mut settings = test_settings().await;
    settings.relay.batch_size = 7;
    settings.relay.standby_interval = Duration::from_millis(50);
    let app = TestApp::spawn_with(settings, &[Role::Api]).await;
    let stop = CancellationToken::new();
    let mut relays = Vec::new();
    for _ in 0..2 {
        let relay = app.app.relay().unwrap();
        let stop = stop.clone();
        relays.push(tokio::spawn(async move { relay.run(stop).await }));
    }
    backlog(&app, 60).await;
    eventually(
        Duration::from_secs(60),
        "the whole outbox published",
        || async {
            let (done, total) = published(&app).await;
            (done == total).then_some(())
        },
    )
    .await;
    stop.cancel();
    for relay in relays {
        relay.await.unwrap().unwrap();
    }
    assert_topic_matches_outbox(&app).await;
    app.stop().await.unwrap();
}
