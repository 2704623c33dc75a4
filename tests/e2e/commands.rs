//! The command side's contract with its clients: customer registration,
//! idempotent retries, and optimistic concurrency.

use serde_json::{Value, json};
use tributary::Role;
use tributary_schemas::{Event, Topic, customers::CustomerRegistered, framing};
use uuid::Uuid;

use crate::helpers::{TestApp, order_body};

async fn post_with_key(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.api))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_customer_is_published_and_an_address_is_registered_once() {
    let app = TestApp::spawn(&[Role::Api, Role::Relay]).await;
    let response = app
        .post(
            "/customers",
            &json!({"email": " Ada@Example.com", "name": "Ada Lovelace"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let customer_id = accepted["customer_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/customers/{customer_id}"));
    assert_eq!(accepted["email"], "ada@example.com");

    let again = app
        .post(
            "/customers",
            &json!({"email": "ADA@example.com", "name": "Someone Else"}),
        )
        .await;
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["field"], "email");
    assert_eq!(problem["customer_id"], customer_id);

    let bad = app
        .post("/customers", &json!({"email": "nope", "name": "Ada"}))
        .await;
    assert_eq!(bad.status(), 400);

    let records = app.read_topic(Topic::Customers, 1).await;
    assert_eq!(records[0].key, customer_id);
    let (_, datum) = framing::split(&records[0].value).unwrap();
    let event = CustomerRegistered::decode(datum).unwrap();
    assert_eq!(
        (event.email.as_str(), event.name.as_str()),
        ("ada@example.com", "Ada Lovelace")
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_command_with_its_idempotency_key_has_one_effect_and_the_same_answer() {
    let app = TestApp::spawn(&[Role::Api]).await;
    let body = order_body(Uuid::now_v7(), &[("TEA-1", 2, 150)]);

    let first = post_with_key(&app, "/orders", "order-attempt-1", &body).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let retry = post_with_key(&app, "/orders", "order-attempt-1", &body).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first);

    // Concurrent retries of a new key: one effect, one answer.
    let body = order_body(Uuid::now_v7(), &[("MUG-1", 1, 900)]);
    let (a, b) = tokio::join!(
        post_with_key(&app, "/orders", "order-attempt-2", &body),
        post_with_key(&app, "/orders", "order-attempt-2", &body)
    );
    assert_eq!(
        (a.status(), b.status()),
        (reqwest::StatusCode::CREATED, reqwest::StatusCode::CREATED)
    );
    assert_eq!(
        a.json::<Value>().await.unwrap(),
        b.json::<Value>().await.unwrap()
    );

    assert_eq!(app.count("commands.orders").await, 2);
    assert_eq!(app.count("commands.outbox").await, 2);

    // The same key with another request is refused, and changes nothing.
    let other = order_body(Uuid::now_v7(), &[("TEA-1", 3, 150)]);
    let reused = post_with_key(&app, "/orders", "order-attempt-1", &other).await;
    assert_eq!(reused.status(), 422);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["field"],
        "Idempotency-Key"
    );
    let order_id = first["order_id"].as_str().unwrap();
    let cancel = post_with_key(
        &app,
        &format!("/orders/{order_id}/cancel"),
        "order-attempt-1",
        &json!({}),
    )
    .await;
    assert_eq!(
        cancel.status(),
        422,
        "a key is bound to its command, not only its body"
    );
    assert_eq!(app.count("commands.orders").await, 2);

    let bad_key = post_with_key(&app, "/orders", "", &other).await;
    assert_eq!(bad_key.status(), 400);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expected_version_is_refused_and_concurrent_commands_never_both_win() {
    let app = TestApp::spawn(&[Role::Api]).await;
    let order_id = app
        .place_order(&order_body(Uuid::now_v7(), &[("TEA-1", 1, 100)]))
        .await;

    let stale = app
        .post(
            &format!("/orders/{order_id}/cancel"),
            &json!({"expected_version": 3}),
        )
        .await;
    assert_eq!(stale.status(), 409);
    let problem: Value = stale.json().await.unwrap();
    assert_eq!(problem["current_version"], 1);
    assert_eq!(problem["field"], "expected_version");

    let path = format!("/orders/{order_id}/cancel");
    let body = json!({"expected_version": 1});
    let (a, b) = tokio::join!(app.post(&path, &body), app.post(&path, &body));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 409],
        "exactly one of two commands against version 1 succeeds"
    );
    assert_eq!(
        app.count("commands.outbox").await,
        2,
        "OrderPlaced and one OrderCancelled"
    );
    app.stop().await.unwrap();
}
