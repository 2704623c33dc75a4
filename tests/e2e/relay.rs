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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_wakes_on_notification_without_waiting_for_its_poll() {
    let mut settings = test_settings().await;
    settings.relay.poll_interval = Duration::from_secs(30);
    let app = TestApp::spawn_with(settings, &[Role::Api, Role::Relay]).await;
    // Bursts of concurrent commands with pauses between: the relay turns
    // busy (inserts stop notifying), finds the outbox empty, asks to be woken
    // again, and each burst is published long before the 30 s poll.
    for burst in 1..=3 {
        // Let the relay find the outbox empty.
        tokio::time::sleep(Duration::from_millis(300)).await;
        futures::future::join_all((0..20).map(|i| {
            let app = &app;
            async move {
                app.place_order(&order_body(Uuid::now_v7(), &[("SKU-1", 1, 100 + i)]))
                    .await
            }
        }))
        .await;
        eventually(
            Duration::from_secs(5),
            "the burst published long before the 30 s poll",
            || async { (published(&app).await == (20 * burst, 20 * burst)).then_some(()) },
        )
        .await;
    }
    app.stop().await.unwrap();
}

/// An outbox row written directly, as PlaceOrder's statement would.
const INSERT_OUTBOX_ROW: &str = "INSERT INTO commands.outbox (event_id, topic, key, value, headers)
     VALUES (gen_random_uuid(), 'orders', 'k', '\\x00', '{}')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_notify_only_an_idle_relay_and_going_idle_waits_for_inserts_in_flight() {
    let app = TestApp::spawn_with(test_settings().await, &[]).await;
    let pool = &app.app.pool;
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .unwrap();
    listener.listen(tributary_relay::CHANNEL).await.unwrap();
    let mut relay = pool.acquire().await.unwrap();

    // A busy relay: inserts do not notify.
    tributary_relay::set_idle(&mut relay, false).await.unwrap();
    sqlx::query(INSERT_OUTBOX_ROW).execute(pool).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err(),
        "an insert notified a busy relay"
    );

    // An insert that read the flag unset and has not committed yet: going
    // idle waits for it, so the relay's next look at the outbox sees it.
    let mut in_flight = pool.begin().await.unwrap();
    sqlx::query(INSERT_OUTBOX_ROW)
        .execute(&mut *in_flight)
        .await
        .unwrap();
    let going_idle = tokio::spawn(async move {
        tributary_relay::set_idle(&mut relay, true).await.unwrap();
        relay
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !going_idle.is_finished(),
        "the relay went idle before an insert in flight committed"
    );
    in_flight.commit().await.unwrap();
    let _relay = tokio::time::timeout(Duration::from_secs(5), going_idle)
        .await
        .expect("the relay goes idle once the insert committed")
        .unwrap();

    // An idle relay: the next insert notifies it.
    sqlx::query(INSERT_OUTBOX_ROW).execute(pool).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("an insert notifies an idle relay")
        .unwrap();
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_are_cleaned_up_after_the_retention_and_the_backlog_is_reported() {
    let mut settings = test_settings().await;
    settings.relay.retention = Duration::from_millis(1);
    settings.relay.cleanup_interval = Duration::from_millis(200);
    let app = TestApp::spawn_with(settings, &[Role::Api, Role::Relay]).await;
    for i in 0..5 {
        app.place_order(&order_body(Uuid::now_v7(), &[("SKU-1", 1, 100 + i)]))
            .await;
    }
    let records = app.read_orders_topic(5).await;
    assert_eq!(records.len(), 5);
    eventually(
        Duration::from_secs(10),
        "published rows deleted",
        || async { (published(&app).await.1 == 0).then_some(()) },
    )
    .await;
    let metrics = tributary_platform::telemetry::render_metrics();
    assert!(
        metrics.contains("tributary_relay_backlog_events"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tributary_relay_backlog_age_seconds"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

/// A tansu broker of the test's own, on a free port, that it can stop and restart.
struct Broker {
    port: u16,
    process: Option<std::process::Child>,
}

impl Broker {
    fn start_on(port: u16) -> Self {
        let bin = std::env::var("TANSU_BIN")
            .expect("TANSU_BIN must name the tansu binary (tests/run sets it)");
        let url = format!("tcp://127.0.0.1:{port}");
        let process = std::process::Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            process: Some(process),
        }
    }

    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_succeed_while_kafka_is_down_and_their_events_flow_when_it_returns() {
    let mut broker = Broker::start();
    let mut settings = test_settings().await;
    settings.kafka.brokers = Some(format!("127.0.0.1:{}", broker.port));
    let app = TestApp::spawn_with(settings, &[Role::Api, Role::Relay]).await;
    app.place_order(&order_body(Uuid::now_v7(), &[("SKU-1", 1, 100)]))
        .await;
    eventually(
        Duration::from_secs(10),
        "the first order published",
        || async { (published(&app).await == (1, 1)).then_some(()) },
    )
    .await;

    broker.stop();
    for i in 0..3 {
        app.place_order(&order_body(Uuid::now_v7(), &[("SKU-2", 1, 200 + i)]))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        published(&app).await,
        (1, 4),
        "events wait in the outbox while Kafka is down"
    );

    // tansu keeps topics in memory: the restarted broker starts empty.
    let broker = Broker::start_on(broker.port);
    app.app.ensure_topics().await.unwrap();
    eventually(
        Duration::from_secs(60),
        "the waiting events published",
        || async { (published(&app).await == (4, 4)).then_some(()) },
    )
    .await;
    let waiting: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM commands.outbox ORDER BY id OFFSET 1")
            .fetch_all(&app.app.pool)
            .await
            .unwrap();
    let records = app.read_orders_topic(3).await;
    let on_topic: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r.headers["event_id"].as_str())
        .collect();
    for event_id in &waiting {
        assert!(
            on_topic.contains(event_id.to_string().as_str()),
            "event {event_id} never reached Kafka"
        );
    }
    app.stop().await.unwrap();
    drop(broker);
}
