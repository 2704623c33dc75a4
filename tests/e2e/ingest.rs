//! Upstream events over HTTP: validated against the registry, published like our own.

use serde_json::{Value, json};
use tributary::Role;
use tributary_platform::{
    Secret,
    auth::{Scope, TokenSettings},
};
use tributary_schemas::{
    Event, Topic, framing, orders::OrderPlaced, payments::PaymentCaptured,
    warehouse::ShipmentDispatched,
};
use uuid::Uuid;

use crate::helpers::{TestApp, test_settings};

async fn ingest(app: &TestApp, topic: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/ingest/{topic}", app.api))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn ingest_binary(
    app: &TestApp,
    topic: &str,
    key: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/ingest/{topic}", app.api))
        .header("content-type", "application/vnd.confluent.avro")
        .body(body);
    if let Some(key) = key {
        request = request.header("kafka-key", key);
    }
    request.send().await.unwrap()
}

async fn refused(response: reqwest::Response, status: u16, field: Option<&str>) {
    assert_eq!(response.status(), status);
    let problem: Value = response.json().await.unwrap();
    if let Some(field) = field {
        assert_eq!(problem["field"], field, "{problem}");
    }
}

fn capture(order_id: &str) -> Value {
    json!({"payment_id": "pay-1", "order_id": order_id, "amount_minor": 2599, "currency": "EUR",
           "captured_at": 1_732_406_400_000_i64})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_event_as_avro_json_is_validated_and_published_like_our_own() {
    let app = TestApp::spawn(&[Role::Api]).await;
    let ids = app.ids().await;
    let order_id = Uuid::now_v7().to_string();
    let subject = format!(
        "{}-payments.PaymentCaptured",
        app.app.topic(Topic::Payments)
    );
    let response = ingest(
        &app,
        "payments.payments.events",
        &json!({"subject": subject, "version": 1, "key": order_id, "value": capture(&order_id)}),
    )
    .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["event_type"], "payments.PaymentCaptured");

    let records = app.read_topic(Topic::Payments, 1).await;
    assert_eq!(records[0].key, order_id);
    let (schema_id, datum) = framing::split(&records[0].value).unwrap();
    assert_eq!(Some(schema_id), ids.id_of(PaymentCaptured::FULL_NAME));
    let event = PaymentCaptured::decode(datum).unwrap();
    assert_eq!(
        (
            event.order_id.as_str(),
            event.amount_minor,
            event.captured_at
        ),
        (order_id.as_str(), 2599, 1_732_406_400_000)
    );
    let headers = &records[0].headers;
    assert_eq!(headers["producer"], "tributary-ingest");
    assert_eq!(headers["event_type"], "payments.PaymentCaptured");
    assert_eq!(headers["event_id"], accepted["event_id"].as_str().unwrap());
    for name in [
        "occurred_at",
        "correlation_id",
        "causation_id",
        "traceparent",
    ] {
        assert!(headers.contains_key(name), "missing header {name}");
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confluent_framed_binary_event_is_published_as_sent() {
    let app = TestApp::spawn(&[Role::Api]).await;
    let ids = app.ids().await;
    let order_id = Uuid::now_v7().to_string();
    let event = ShipmentDispatched {
        shipment_id: "shp-1".into(),
        order_id: order_id.clone(),
        carrier: "DHL".into(),
        tracking_number: "JD0001".into(),
        dispatched_at: 1_732_406_400_000,
    };
    let framed =
        framing::encode(ids.id_of(ShipmentDispatched::FULL_NAME).unwrap(), &event).unwrap();
    let response = ingest_binary(
        &app,
        "warehouse.shipments.events",
        Some(&order_id),
        framed.clone(),
    )
    .await;
    assert_eq!(response.status(), 202);
    let records = app.read_topic(Topic::Shipments, 1).await;
    assert_eq!(
        (records[0].key.as_str(), &records[0].value),
        (order_id.as_str(), &framed)
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_do_not_match_the_contract_are_refused_naming_the_field_and_never_published() {
    let mut settings = test_settings().await;
    settings.auth.tokens.insert(
        "storefront".into(),
        TokenSettings {
            secret: Secret::new("storefront-token-0123"),
            scopes: [Scope::Commands].into_iter().collect(),
        },
    );
    let app = TestApp::spawn_with(settings, &[Role::Api]).await;
    let ids = app.ids().await;
    let order_id = Uuid::now_v7().to_string();
    let payments = app.app.topic(Topic::Payments);
    let subject = format!("{payments}-payments.PaymentCaptured");
    let valid = json!({"subject": subject, "key": order_id, "value": capture(&order_id)});

    refused(ingest(&app, "shop.orders.events", &valid).await, 404, None).await;
    let wrong_topic = json!({"subject": format!("{}-payments.PaymentCaptured", app.app.topic(Topic::Shipments)),
                             "key": order_id, "value": capture(&order_id)});
    refused(
        ingest(&app, "payments.payments.events", &wrong_topic).await,
        400,
        Some("subject"),
    )
    .await;
    let mut unknown_version = valid.clone();
    unknown_version["version"] = json!(7);
    refused(
        ingest(&app, "payments.payments.events", &unknown_version).await,
        400,
        Some("subject"),
    )
    .await;
    let mut missing = valid.clone();
    missing["value"]
        .as_object_mut()
        .unwrap()
        .remove("amount_minor");
    refused(
        ingest(&app, "payments.payments.events", &missing).await,
        400,
        Some("value"),
    )
    .await;
    let mut mistyped = valid.clone();
    mistyped["value"]["amount_minor"] = json!("lots");
    refused(
        ingest(&app, "payments.payments.events", &mistyped).await,
        400,
        Some("value"),
    )
    .await;
    let mut no_key = valid.clone();
    no_key.as_object_mut().unwrap().remove("key");
    refused(
        ingest(&app, "payments.payments.events", &no_key).await,
        400,
        Some("key"),
    )
    .await;

    refused(
        ingest_binary(
            &app,
            "payments.payments.events",
            Some("k"),
            b"garbage".to_vec(),
        )
        .await,
        400,
        Some("body"),
    )
    .await;
    refused(
        ingest_binary(
            &app,
            "payments.payments.events",
            Some("k"),
            framing::frame(999_999, b"\x02"),
        )
        .await,
        400,
        Some("body"),
    )
    .await;
    let placed_id = ids.id_of(OrderPlaced::FULL_NAME).unwrap();
    refused(
        ingest_binary(
            &app,
            "payments.payments.events",
            Some("k"),
            framing::frame(placed_id, b"\x02"),
        )
        .await,
        400,
        Some("body"),
    )
    .await;
    let captured_id = ids.id_of(PaymentCaptured::FULL_NAME).unwrap();
    refused(
        ingest_binary(
            &app,
            "payments.payments.events",
            Some("k"),
            framing::frame(captured_id, b"\x02"),
        )
        .await,
        400,
        Some("body"),
    )
    .await;
    refused(
        ingest_binary(
            &app,
            "payments.payments.events",
            None,
            framing::frame(captured_id, b""),
        )
        .await,
        400,
        Some("Kafka-Key"),
    )
    .await;

    let storefront = reqwest::Client::new()
        .post(format!("{}/ingest/payments.payments.events", app.api))
        .bearer_auth("storefront-token-0123")
        .json(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(storefront.status(), 403, "a commands token cannot ingest");

    assert_eq!(
        app.topic_size(Topic::Payments),
        0,
        "nothing refused reached Kafka"
    );
    let accepted = ingest(&app, "payments.payments.events", &valid).await;
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    let records = app.read_topic(Topic::Payments, 1).await;
    assert_eq!(
        records[0].headers["event_id"],
        accepted["event_id"].as_str().unwrap(),
        "the first record on the topic is the valid event"
    );
    app.stop().await.unwrap();
}
