//! Bad input gets `application/problem+json` naming the field, and nothing is written.

use serde_json::{Value, json};
use tributary::Role;
use uuid::Uuid;

use crate::helpers::{TestApp, order_body, problem};

async fn refused(app: &TestApp, body: Value, field: &str) {
    let problem = problem(app.post("/orders", &body).await, 400).await;
    assert_eq!(problem["field"], field, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_place_order_is_refused_naming_the_field_and_writes_nothing() {
    let app = TestApp::spawn(&[Role::Api]).await;
    let customer = Uuid::now_v7();
    let valid = order_body(customer, &[("TEA-1", 1, 100)]);

    // Malformed JSON.
    let response = app
        .http
        .post(format!("{}/orders", app.api))
        .header("content-type", "application/json")
        .body("{\"customer_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response, 400).await["title"], "Malformed JSON");

    // Missing, unknown and mistyped fields.
    refused(&app, json!({"currency": "EUR", "lines": []}), "customer_id").await;
    let mut unknown = valid.clone();
    unknown["coupon"] = json!("FREE");
    refused(&app, unknown, "coupon").await;
    let mut mistyped = valid.clone();
    mistyped["lines"][0]["quantity"] = json!("two");
    refused(&app, mistyped, "lines[0].quantity").await;

    // Invalid values.
    refused(
        &app,
        order_body(customer, &[("TEA-1", 0, 100)]),
        "lines[0].quantity",
    )
    .await;
    refused(
        &app,
        order_body(customer, &[("TEA-1", 1, 100), ("MUG", -2, 100)]),
        "lines[1].quantity",
    )
    .await;
    refused(
        &app,
        order_body(customer, &[("TEA-1", 1, -5)]),
        "lines[0].unit_price_minor",
    )
    .await;
    refused(
        &app,
        order_body(customer, &[("not a sku!", 1, 5)]),
        "lines[0].sku",
    )
    .await;
    refused(&app, order_body(customer, &[]), "lines").await;
    let mut currency = valid.clone();
    currency["currency"] = json!("XYZ");
    refused(&app, currency, "currency").await;
    let mut customer_id = valid.clone();
    customer_id["customer_id"] = json!("bob");
    refused(&app, customer_id, "customer_id").await;
    let mut channel = valid.clone();
    channel["channel"] = json!("Web Shop");
    refused(&app, channel, "channel").await;
    // Well-formed, but not in the product catalog: the second line is named.
    let problem_doc = problem(
        app.post(
            "/orders",
            &order_body(customer, &[("TEA-1", 1, 100), ("GHOST-9", 1, 100)]),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(problem_doc["field"], "lines[1].sku", "{problem_doc}");
    assert!(
        problem_doc["detail"]
            .as_str()
            .unwrap()
            .contains("GHOST-9 is not in the product catalog"),
        "{problem_doc}"
    );

    // Oversized body and wrong content type.
    let huge = json!({"customer_id": customer.to_string(), "currency": "EUR", "lines": [], "pad": "x".repeat(1 << 20)});
    problem(app.post("/orders", &huge).await, 413).await;
    let response = app
        .http
        .post(format!("{}/orders", app.api))
        .header("content-type", "text/plain")
        .body(valid.to_string())
        .send()
        .await
        .unwrap();
    problem(response, 415).await;

    assert_eq!(app.count("commands.orders").await, 0);
    assert_eq!(app.count("commands.outbox").await, 0);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_unknown_or_cancelled_order_is_refused_with_its_state() {
    let app = TestApp::spawn(&[Role::Api]).await;
    let unknown = problem(
        app.post(&format!("/orders/{}/cancel", Uuid::now_v7()), &json!({}))
            .await,
        404,
    )
    .await;
    assert_eq!(unknown["title"], "Not found");
    let bad_id = problem(app.post("/orders/not-a-uuid/cancel", &json!({})).await, 400).await;
    assert_eq!(bad_id["field"], "order_id");

    let order_id = app
        .place_order(&order_body(Uuid::now_v7(), &[("TEA-1", 1, 100)]))
        .await;
    let too_long = problem(
        app.post(
            &format!("/orders/{order_id}/cancel"),
            &json!({"reason": "x".repeat(501)}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(too_long["field"], "reason");
    let response = app
        .post(
            &format!("/orders/{order_id}/cancel"),
            &json!({"reason": "first"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let again = problem(
        app.post(&format!("/orders/{order_id}/cancel"), &json!({}))
            .await,
        409,
    )
    .await;
    assert_eq!(again["current_status"], "cancelled");

    assert_eq!(
        app.count("commands.outbox").await,
        2,
        "OrderPlaced and one OrderCancelled"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_api_refuses_bad_filters_naming_the_field() {
    let app = TestApp::spawn(&[Role::Query]).await;
    for (query, field) in [
        ("status=lost", "status"),
        ("customer_id=bob", "customer_id"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("colour=red", "colour"),
    ] {
        let response = app
            .http
            .get(format!("{}/orders?{query}", app.query))
            .send()
            .await
            .unwrap();
        assert_eq!(problem(response, 400).await["field"], field, "{query}");
    }
    let response = app
        .http
        .get(format!("{}/orders/{}", app.query, Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    problem(response, 404).await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_managed_by_administrators_and_decides_which_skus_sell() {
    use tributary_platform::{
        Secret,
        auth::{Scope, TokenSettings},
    };
    let mut settings = crate::helpers::test_settings().await;
    const STOREFRONT: &str = "storefront-token-0123456789";
    settings.auth.tokens.insert(
        "storefront".into(),
        TokenSettings {
            secret: Secret::new(STOREFRONT),
            scopes: [Scope::Commands].into_iter().collect(),
        },
    );
    let app = TestApp::spawn_with(settings, &[Role::Api]).await;
    let customer = Uuid::now_v7();
    let order = order_body(customer, &[("KETTLE-2L", 1, 4500)]);
    problem(app.post("/orders", &order).await, 400).await;

    // The storefront may read the catalog but not change it.
    let storefront = reqwest::Client::new();
    let put = |client: &reqwest::Client, token: Option<&str>, body: Value| {
        let mut request = client
            .put(format!("{}/products/KETTLE-2L", app.api))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let denied = put(&storefront, Some(STOREFRONT), json!({"name": "Kettle 2 l"}))
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);

    let created = app
        .http
        .put(format!("{}/products/KETTLE-2L", app.api))
        .json(&json!({"name": "Kettle 2 l"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let renamed = app
        .http
        .put(format!("{}/products/KETTLE-2L", app.api))
        .json(&json!({"name": "Kettle, 2 litres"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    assert_eq!(
        renamed.json::<Value>().await.unwrap()["name"],
        "Kettle, 2 litres"
    );
    problem(
        app.http
            .put(format!("{}/products/has%20space", app.api))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    problem(
        app.http
            .put(format!("{}/products/KETTLE-2L", app.api))
            .json(&json!({"name": "  "}))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;

    let page: Value = storefront
        .get(format!("{}/products?after=KETTLE-1&limit=1", app.api))
        .bearer_auth(STOREFRONT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["sku"], "KETTLE-2L", "{page}");

    // Now the order sells.
    let response = app.post("/orders", &order).await;
    assert_eq!(response.status(), 201);
    app.stop().await.unwrap();
}
