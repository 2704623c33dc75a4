//! Upstream payments and shipments become order transitions; what does not
//! apply is dead-lettered with the reason.

use std::time::Duration;

use serde_json::{Value, json};
use tributary::Role;
use tributary_schemas::Topic;
use uuid::Uuid;

use crate::helpers::{TestApp, captured, eventually, ingest, order_body, status};

async fn read_model_status(app: &TestApp, order_id: &str, wanted: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        &format!("order {order_id} {wanted} in the query API"),
        || async {
            let view: Value = app
                .http
                .get(format!("{}/orders/{order_id}", app.query))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (view["status"] == wanted).then_some(view)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_payments_and_shipments_drive_an_order_through_its_life() {
    let app = TestApp::spawn(&[
        Role::Api,
        Role::Relay,
        Role::ProcessManager,
        Role::Projector,
        Role::Query,
    ])
    .await;
    let order_id = app
        .place_order(&order_body(
            Uuid::now_v7(),
            &[("TEA-1", 2, 1250), ("MUG-2", 1, 899)],
        ))
        .await
        .to_string();

    ingest(
        &app,
        Topic::Payments,
        "payments.PaymentCaptured",
        &order_id,
        captured(&order_id, 3399, "EUR"),
    )
    .await;
    read_model_status(&app, &order_id, "paid").await;
    ingest(&app, Topic::Shipments, "warehouse.ShipmentDispatched", &order_id, json!({"shipment_id": "shp-1",
        "order_id": order_id, "carrier": "DHL", "tracking_number": "JD1", "dispatched_at": 1_732_406_500_000_i64})).await;
    read_model_status(&app, &order_id, "shipped").await;
    ingest(
        &app,
        Topic::Shipments,
        "warehouse.ShipmentDelivered",
        &order_id,
        json!({"shipment_id": "shp-1",
        "order_id": order_id, "delivered_at": 1_732_406_600_000_i64}),
    )
    .await;
    read_model_status(&app, &order_id, "delivered").await;
    ingest(&app, Topic::Payments, "payments.RefundIssued", &order_id, json!({"refund_id": "ref-1", "payment_id": "pay-1",
        "order_id": order_id, "amount_minor": 1000, "currency": "EUR", "issued_at": 1_732_406_700_000_i64})).await;
    let refunded = read_model_status(&app, &order_id, "refunded").await;
    assert_eq!(refunded["refunded_minor"], 1000);
    assert!(
        refunded["paid_at"].is_string()
            && refunded["shipped_at"].is_string()
            && refunded["delivered_at"].is_string()
    );

    assert_eq!(status(&app, &order_id).await, ("refunded".to_owned(), 5));
    let mut records = app.read_orders_topic(5).await;
    records.sort_by_key(|r| r.offset);
    let types: Vec<&str> = records
        .iter()
        .map(|r| r.headers["event_type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "shop.orders.OrderPlaced",
            "shop.orders.OrderPaid",
            "shop.orders.OrderShipped",
            "shop.orders.OrderDelivered",
            "shop.orders.OrderRefunded"
        ]
    );
    assert!(
        records[1..]
            .iter()
            .all(|r| r.headers["producer"] == "tributary-process-manager")
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_events_that_do_not_apply_are_dead_lettered_with_the_reason() {
    let app = TestApp::spawn(&[Role::Api, Role::Relay, Role::ProcessManager]).await;
    let order_id = app
        .place_order(&order_body(
            Uuid::now_v7(),
            &[("TEA-1", 2, 1250), ("MUG-2", 1, 899)],
        ))
        .await
        .to_string();
    let unknown = Uuid::now_v7().to_string();

    // An unknown order, a wrong amount, a wrong currency.
    for (key, amount, currency) in [
        (&unknown, 3399, "EUR"),
        (&order_id, 100, "EUR"),
        (&order_id, 3399, "USD"),
    ] {
        ingest(
            &app,
            Topic::Payments,
            "payments.PaymentCaptured",
            key,
            captured(key, amount, currency),
        )
        .await;
    }
    ingest(&app, Topic::Shipments, "warehouse.ShipmentDispatched", &order_id, json!({"shipment_id": "shp-1",
        "order_id": order_id, "carrier": "DHL", "tracking_number": "JD1", "dispatched_at": 1_732_406_500_000_i64})).await;
    // Payments and shipments are different topics, with no order between them:
    // let the dead letters land before the order may move on.
    let dead_letters = app.app.process_manager_dead_letters();
    let dead = app.read_topic_named(&dead_letters, 4).await;
    assert_eq!(
        status(&app, &order_id).await,
        ("placed".to_owned(), 1),
        "nothing that did not apply changed the order"
    );

    // The capture, then the provider sends it again: already applied, nothing happens.
    for _ in 0..2 {
        let capture = captured(&order_id, 3399, "EUR");
        ingest(
            &app,
            Topic::Payments,
            "payments.PaymentCaptured",
            &order_id,
            capture,
        )
        .await;
    }
    eventually(
        Duration::from_secs(30),
        "both captures consumed",
        || async {
            let applied = tributary_consumer::applied(
                &app.app.pool,
                "process-manager",
                &app.app.topic(Topic::Payments),
            )
            .await
            .unwrap();
            (applied == 5).then_some(())
        },
    )
    .await;
    assert_eq!(status(&app, &order_id).await, ("paid".to_owned(), 2));
    // Dead letters go through the outbox: count them there, where the count is exact.
    let dead_lettered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM commands.outbox WHERE topic = $1")
            .bind(&dead_letters)
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!(dead_lettered, 4, "a repeated event is not a dead letter");

    let mut errors: Vec<&str> = dead.iter().map(|r| r.headers["error"].as_str()).collect();
    errors.sort();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&format!("order {unknown} does not exist"))),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("amount_minor")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("currency: USD differs")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("cannot become shipped")),
        "{errors:?}"
    );
    let upstream = [
        app.app.topic(Topic::Payments),
        app.app.topic(Topic::Shipments),
    ];
    for record in &dead {
        assert!(
            upstream.contains(&record.headers["original_topic"]),
            "{:?}",
            record.headers
        );
        assert!(
            record.headers.contains_key("original_offset")
                && record.headers.contains_key("schema_id")
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_published_by_pythons_avro_serializer_is_applied_by_the_process_manager() {
    let app = TestApp::spawn(&[Role::Api, Role::Relay, Role::ProcessManager]).await;
    app.ids().await;
    let order_id = app
        .place_order(&order_body(Uuid::now_v7(), &[("TEA-1", 2, 1250)]))
        .await
        .to_string();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/publish_payment.py"
    );
    let args = [
        script.to_owned(),
        app.app.cluster.bootstrap_servers(),
        app.app.settings.registry.url.clone(),
        app.app.topic(Topic::Payments),
        order_id.clone(),
        "2500".to_owned(),
        "EUR".to_owned(),
    ];
    // Basic auth with the test's token (name and secret), as Confluent clients send it.
    let user_info = format!(
        "self:{}",
        app.app.settings.auth.tokens["self"].secret.expose()
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(args)
            .env("REGISTRY_USER_INFO", user_info)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    assert!(
        output.status.success(),
        "publish_payment.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eventually(Duration::from_secs(30), "the order paid", || async {
        (status(&app, &order_id).await.0 == "paid").then_some(())
    })
    .await;
    app.stop().await.unwrap();
}
