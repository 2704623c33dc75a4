//! One order through the whole system: HTTP command → write model and outbox
//! → relay → Kafka → projector → read model → query API.

use std::time::Duration;

use serde_json::{Value, json};
use tributary::Role;
use tributary_schemas::{
    Event, framing,
    orders::{OrderCancelled, OrderLine, OrderPlaced},
};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, order_body};

async fn order_view(app: &TestApp, order_id: Uuid, status: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        &format!("order {order_id} {status} in the query API"),
        || async {
            let response = app
                .http
                .get(format!("{}/orders/{order_id}", app.query))
                .send()
                .await
                .ok()?;
            let view: Value = response.json().await.ok()?;
            (view["status"] == status).then_some(view)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_and_cancelled_order_flows_through_kafka_into_the_query_api() {
    let app = TestApp::spawn(&[Role::Api, Role::Relay, Role::Projector, Role::Query]).await;
    let customer = Uuid::now_v7();

    let mut body = order_body(customer, &[("TEA-1", 2, 1250), ("MUG-2", 1, 899)]);
    body["channel"] = json!("web");
    let order_id = app.place_order(&body).await;
    let placed = order_view(&app, order_id, "placed").await;
    assert_eq!(placed["customer_id"], customer.to_string());
    assert_eq!(placed["currency"], "EUR");
    assert_eq!(placed["total_minor"], 3399);
    assert_eq!(placed["line_count"], 2);
    assert_eq!(placed["item_count"], 3);

    let response = app
        .post(
            &format!("/orders/{order_id}/cancel"),
            &json!({"reason": "test"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let cancelled = order_view(&app, order_id, "cancelled").await;
    assert!(cancelled["cancelled_at"].is_string());

    // The list endpoint finds it by status and customer.
    let page: Value = app
        .http
        .get(format!(
            "{}/orders?status=cancelled&customer_id={customer}",
            app.query
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // On the wire: keyed by the order id, one partition, in order, Confluent
    // framing with the registered ids, and the standard headers.
    let ids = app.ids().await;
    let records = app.read_orders_topic(2).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.key == order_id.to_string()));
    assert_eq!(records[0].partition, records[1].partition);
    let (placed_record, cancelled_record) = if records[0].offset < records[1].offset {
        (&records[0], &records[1])
    } else {
        (&records[1], &records[0])
    };
    let (schema_id, datum) = framing::split(&placed_record.value).unwrap();
    assert_eq!(Some(schema_id), ids.id_of(OrderPlaced::FULL_NAME));
    let event = OrderPlaced::decode(datum).unwrap();
    assert_eq!(event.order_id, order_id.to_string());
    assert_eq!(event.channel.as_deref(), Some("web"));
    assert_eq!(
        event.lines,
        vec![
            OrderLine {
                sku: "TEA-1".into(),
                quantity: 2,
                unit_price_minor: 1250
            },
            OrderLine {
                sku: "MUG-2".into(),
                quantity: 1,
                unit_price_minor: 899
            },
        ]
    );
    let (schema_id, _) = framing::split(&cancelled_record.value).unwrap();
    assert_eq!(Some(schema_id), ids.id_of(OrderCancelled::FULL_NAME));

    for (record, event_type) in [
        (placed_record, OrderPlaced::FULL_NAME),
        (cancelled_record, OrderCancelled::FULL_NAME),
    ] {
        let h = &record.headers;
        assert_eq!(h["event_type"], event_type);
        assert_eq!(
            Uuid::parse_str(&h["event_id"]).unwrap().get_version_num(),
            7
        );
        assert!(chrono::DateTime::parse_from_rfc3339(&h["occurred_at"]).is_ok());
        assert!(Uuid::parse_str(&h["correlation_id"]).is_ok());
        assert!(Uuid::parse_str(&h["causation_id"]).is_ok());
        assert_eq!(h["producer"], "tributary-api");
        assert_eq!(
            h["traceparent"].split('-').count(),
            4,
            "every event carries a trace context"
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_and_trace_context_from_the_request_reach_the_event_headers() {
    let app = TestApp::spawn(&[Role::Api, Role::Relay]).await;
    let correlation = Uuid::now_v7();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .http
        .post(format!("{}/orders", app.api))
        .header("x-correlation-id", correlation.to_string())
        .header("traceparent", traceparent)
        .json(&order_body(Uuid::now_v7(), &[("TEA-1", 1, 100)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let records = app.read_orders_topic(1).await;
    assert_eq!(
        records[0].headers["correlation_id"],
        correlation.to_string()
    );
    let ours = &records[0].headers["traceparent"];
    assert!(
        ours.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "the caller's trace continues: {ours}"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_role_answers_liveness_readiness_and_metrics() {
    let app = TestApp::spawn(&[Role::Api, Role::Query]).await;
    let registry = app.app.settings.registry.url.clone();
    app.place_order(&order_body(Uuid::now_v7(), &[("TEA-1", 1, 100)]))
        .await;
    for base in [&app.api, &app.query, &registry] {
        for path in ["/health/live", "/health/ready"] {
            let response = app.http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{base}{path}");
        }
        let metrics = app
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200, "{base}/metrics");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("tributary_commands_total"), "{metrics}");
    app.stop().await.unwrap();
}
