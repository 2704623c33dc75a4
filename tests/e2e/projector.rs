//! The projector applies every event exactly once across stops, crashes and
//! poison messages.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio_util::sync::CancellationToken;
use tributary_schemas::{
    Event, framing,
    orders::{OrderCancelled, OrderLine, OrderPlaced},
};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, test_settings};

/// What was published: the expected read model.
struct Published {
    messages: i64,
    orders: i64,
    cancelled: i64,
    total_minor: i64,
}

/// Publishes `orders` OrderPlaced events and cancels every fifth order.
async fn publish(app: &TestApp, orders: usize) -> Published {
    let ids = app.ids().await;
    let producer = app.producer();
    let mut rng = StdRng::seed_from_u64(42);
    let mut published = Published {
        messages: 0,
        orders: 0,
        cancelled: 0,
        total_minor: 0,
    };
    for i in 0..orders {
        let lines: Vec<OrderLine> = (0..rng.random_range(1..=3))
            .map(|n| OrderLine {
                sku: format!("SKU-{n}"),
                quantity: rng.random_range(1..=5),
                unit_price_minor: rng.random_range(1..=10_000),
            })
            .collect();
        let total_minor = lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_minor)
            .sum();
        let order_id = Uuid::now_v7().to_string();
        let placed = OrderPlaced {
            order_id: order_id.clone(),
            customer_id: Uuid::now_v7().to_string(),
            currency: "EUR".into(),
            lines,
            total_minor,
            placed_at: 1_700_000_000_000 + i as i64,
            channel: None,
        };
        app.produce(&producer, &ids, &placed).await;
        published.messages += 1;
        published.orders += 1;
        published.total_minor += total_minor;
        if i % 5 == 0 {
            let cancelled = OrderCancelled {
                order_id,
                reason: "test".into(),
                cancelled_at: 1_800_000_000_000,
            };
            app.produce(&producer, &ids, &cancelled).await;
            published.messages += 1;
            published.cancelled += 1;
        }
    }
    published
}

async fn assert_read_model_equals(app: &TestApp, published: &Published) {
    let (orders, cancelled, total): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'cancelled'), COALESCE(sum(total_minor), 0)::bigint
         FROM read_model.orders",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(
        (orders, cancelled, total),
        (published.orders, published.cancelled, published.total_minor),
        "read model (orders, cancelled, total) differs from what was published"
    );
    assert_eq!(app.stored_offsets().await, published.messages);
}

async fn wait_for_offsets(app: &TestApp, at_least: i64) -> i64 {
    eventually(
        Duration::from_secs(60),
        &format!("{at_least} stored offsets"),
        || async {
            let stored = app.stored_offsets().await;
            (stored >= at_least).then_some(stored)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_stopped_mid_stream_and_restarted_applies_every_event_exactly_once() {
    let mut settings = test_settings().await;
    settings.projector.max_batch = 10;
    let app = TestApp::spawn_with(settings, &[]).await;
    let published = publish(&app, 1500).await;

    let first = app.app.projector().await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(first.run(stop.clone()));
    wait_for_offsets(&app, published.messages / 4).await;
    stop.cancel();
    let first = running.await.unwrap().unwrap();
    assert!(
        (first.applied as i64) < published.messages,
        "the first projector should stop mid-stream, but applied all {} events",
        first.applied
    );
    assert_eq!(app.stored_offsets().await, first.applied as i64);

    let second = app.app.projector().await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(second.run(stop.clone()));
    wait_for_offsets(&app, published.messages).await;
    stop.cancel();
    let second = running.await.unwrap().unwrap();

    assert_eq!(
        (first.applied + second.applied) as i64,
        published.messages,
        "every event applied exactly once (first {first:?}, second {second:?})"
    );
    assert_read_model_equals(&app, &published).await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_projector_resumes_from_the_offsets_stored_with_the_read_model() {
    let mut settings = test_settings().await;
    settings.projector.max_batch = 10;
    let app = TestApp::spawn_with(settings, &[]).await;
    let published = publish(&app, 1500).await;

    let first = app.app.projector().await.unwrap();
    let running = tokio::spawn(first.run(CancellationToken::new()));
    wait_for_offsets(&app, published.messages / 4).await;
    // A crash: the task dies wherever it is, mid-batch or between batches.
    running.abort();
    let _ = running.await;
    let applied_before_crash = app.stored_offsets().await;
    assert!(
        applied_before_crash < published.messages,
        "the crash should come mid-stream"
    );

    let second = app.app.projector().await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(second.run(stop.clone()));
    wait_for_offsets(&app, published.messages).await;
    stop.cancel();
    let second = running.await.unwrap().unwrap();

    assert_eq!(
        second.applied as i64,
        published.messages - applied_before_crash,
        "the restarted projector applies exactly what the crashed one had not committed ({second:?})"
    );
    assert_read_model_equals(&app, &published).await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_pills_go_to_the_dead_letter_topic_and_the_partition_carries_on() {
    let app = TestApp::spawn(&[]).await;
    let ids = app.ids().await;
    let producer = app.producer();
    let key = Uuid::now_v7().to_string();
    let placed_id = ids.id_of(OrderPlaced::FULL_NAME).unwrap();
    let placed = |currency: &str| OrderPlaced {
        order_id: Uuid::now_v7().to_string(),
        customer_id: Uuid::now_v7().to_string(),
        currency: currency.into(),
        lines: vec![OrderLine {
            sku: "A".into(),
            quantity: 1,
            unit_price_minor: 5,
        }],
        total_minor: 5,
        placed_at: 1_700_000_000_000,
        channel: None,
    };

    // Undecodable, an unknown schema id, a truncated datum, and one the
    // read model refuses (a currency longer than char(3)): each poisons the partition.
    app.produce_raw(&producer, &key, b"not avro at all").await;
    app.produce_raw(&producer, &key, &framing::frame(999_999, b"\x02"))
        .await;
    app.produce_raw(&producer, &key, &framing::frame(placed_id, b"\x02\x02"))
        .await;
    // One key, so all five land on one partition in this order.
    let refused = framing::encode(placed_id, &placed("EURO")).unwrap();
    app.produce_raw(&producer, &key, &refused).await;
    let good = placed("EUR");
    app.produce_raw(&producer, &key, &framing::encode(placed_id, &good).unwrap())
        .await;

    let projector = app.app.projector().await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone()));
    wait_for_offsets(&app, 5).await;
    stop.cancel();
    let batch = running.await.unwrap().unwrap();
    assert_eq!((batch.applied, batch.dead_lettered), (1, 4), "{batch:?}");
    let applied: Vec<String> = sqlx::query_scalar("SELECT order_id::text FROM read_model.orders")
        .fetch_all(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(applied, [good.order_id], "only the good event is applied");

    let dead = app
        .read_topic_named(&app.app.projector_dead_letters(), 4)
        .await;
    let orders_topic = app.app.topic(tributary_schemas::Topic::Orders);
    let mut offsets: Vec<&str> = dead
        .iter()
        .map(|r| r.headers["original_offset"].as_str())
        .collect();
    offsets.sort();
    assert_eq!(
        offsets,
        ["0", "1", "2", "3"],
        "the four poison pills, once each"
    );
    let partition = dead[0].headers["original_partition"].clone();
    for record in &dead {
        assert_eq!(record.headers["original_topic"], orders_topic);
        assert_eq!(record.headers["original_partition"], partition);
        assert_eq!(record.key, key, "the key as it was");
        assert_eq!(
            Some(&record.headers["consumer_group"]),
            app.app.settings.projector.group_id.as_ref()
        );
    }
    let by_offset = |offset: &str| {
        dead.iter()
            .find(|r| r.headers["original_offset"] == offset)
            .unwrap()
    };
    assert_eq!(
        by_offset("0").value,
        b"not avro at all",
        "the bytes as they were"
    );
    assert!(!by_offset("0").headers.contains_key("schema_id"));
    assert_eq!(by_offset("1").headers["schema_id"], "999999");
    assert!(
        by_offset("1").headers["error"].contains("schema id 999999 is not in the registry"),
        "{:?}",
        by_offset("1").headers
    );
    assert_eq!(by_offset("2").headers["schema_id"], placed_id.to_string());
    assert_eq!(by_offset("3").headers["schema_id"], placed_id.to_string());
    assert!(
        by_offset("3").headers["error"].contains("value too long"),
        "the handler's error: {:?}",
        by_offset("3").headers
    );
    assert!(
        tributary_platform::telemetry::render_metrics()
            .contains("tributary_consumer_dead_letters_total"),
        "dead letters are counted"
    );
    app.stop().await.unwrap();
}
