//! The notifier over a real broker, database and SMTP server: signed
//! webhooks that a failing receiver sees once, backoff within bounds, the
//! dead letter after the last attempt and its redrive, subscriptions and
//! their refusals, the SSRF guard, and the customers' e-mails.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tributary::Role;
use tributary_notifier::webhook::{SIGNATURE_HEADER, verify};
use tributary_schemas::Topic;
use tributary_tasks::results;
use uuid::Uuid;

use crate::helpers::{
    SmtpSink, TestApp, captured, eventually, ingest, order_body, problem, status, test_settings,
};

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Request {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().unwrap()
    }
}

/// A webhook receiver as a subscriber would write one: it answers 500 to
/// the first `failures` requests, then processes each idempotency key once.
#[derive(Debug, Default)]
struct Receiver {
    failures: usize,
    requests: Vec<Request>,
    /// Events processed, in order: each key once.
    processed: Vec<String>,
    seen: HashSet<String>,
}

type Shared = Arc<Mutex<Receiver>>;

async fn receive(State(receiver): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut receiver = receiver.lock().unwrap();
    receiver.requests.push(Request {
        at: Instant::now(),
        headers: headers.clone(),
        body,
    });
    if receiver.requests.len() <= receiver.failures {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let key = headers["idempotency-key"].to_str().unwrap().to_owned();
    if receiver.seen.insert(key.clone()) {
        receiver.processed.push(key);
    }
    StatusCode::NO_CONTENT
}

/// What a receiver got and processed so far.
fn snapshot(receiver: &Shared) -> (Vec<Request>, Vec<String>) {
    let receiver = receiver.lock().unwrap();
    (receiver.requests.clone(), receiver.processed.clone())
}

/// Starts a receiver on loopback failing its first `failures` requests; returns its URL.
async fn receiver(failures: usize) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Receiver {
        failures,
        ..Receiver::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/hooks", post(receive))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, shared)
}

/// Subscribes `url` to `event_types` over HTTP; returns the id and secret.
async fn subscribe(app: &TestApp, url: &str, event_types: &[&str]) -> (String, String) {
    let response = app
        .post(
            "/webhooks/subscriptions",
            &json!({"url": url, "event_types": event_types, "description": "test"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    (
        created["subscription_id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_reaches_a_failing_receiver_once_with_backoff_within_bounds() {
    let mut settings = test_settings().await;
    settings.tasks.retry_backoff = Duration::from_secs(1);
    let app = TestApp::spawn_with(
        settings,
        &[Role::Api, Role::Relay, Role::Notifier, Role::Worker],
    )
    .await;
    let (url, receiver) = receiver(2).await;
    let (subscription, secret) = subscribe(&app, &url, &["shop.orders.OrderPlaced"]).await;
    let (other_url, other) = receiver_for_every_event().await;
    subscribe(&app, &other_url, &["*"]).await;

    let customer = app
        .register_customer("grace@example.com", "Grace Hopper")
        .await;
    let order_id = app
        .place_order(&order_body(customer, &[("TEA-1", 2, 450)]))
        .await;

    eventually(
        Duration::from_secs(60),
        "the receiver to process the order",
        || async { (!receiver.lock().unwrap().processed.is_empty()).then_some(()) },
    )
    .await;
    let (requests, processed) = snapshot(&receiver);
    // Two failures, then success: three requests, one event processed.
    assert_eq!(requests.len(), 3, "{:?}", requests);
    let body: Value = serde_json::from_slice(&requests[2].body).unwrap();
    assert_eq!(body["type"], "shop.orders.OrderPlaced");
    assert_eq!(body["data"]["order_id"], order_id.to_string());
    assert_eq!(body["data"]["total_minor"], 900);
    assert_eq!(processed, [body["id"].as_str().unwrap()]);
    for (i, request) in requests.iter().enumerate() {
        // Every attempt carries the same key and body, signed afresh.
        assert_eq!(request.body, requests[0].body);
        assert_eq!(
            request.header("idempotency-key"),
            body["id"].as_str().unwrap()
        );
        assert_eq!(
            request.header("tributary-event-id"),
            body["id"].as_str().unwrap()
        );
        assert_eq!(
            request.header("tributary-delivery-attempt"),
            (i + 1).to_string()
        );
        assert!(
            verify(&secret, request.header(SIGNATURE_HEADER), &request.body),
            "attempt {} is signed with the subscription's secret",
            i + 1
        );
        assert!(!verify(
            "another secret entirely",
            request.header(SIGNATURE_HEADER),
            &request.body
        ));
    }
    // Backoff: retry_backoff 1 s doubling, jitter from half to all of it, on
    // delay topics that round up to the next hop (1 s) and a poll's slack.
    let gaps: Vec<Duration> = requests
        .windows(2)
        .map(|pair| pair[1].at - pair[0].at)
        .collect();
    assert!(
        gaps[0] >= Duration::from_millis(500) && gaps[0] <= Duration::from_secs(4),
        "first backoff {:?}",
        gaps[0]
    );
    assert!(
        gaps[1] >= Duration::from_secs(1) && gaps[1] <= Duration::from_secs(6),
        "second backoff {:?}",
        gaps[1]
    );

    // The task's result and the dedupe record say the same (the outcome is
    // stored just after the receiver answered).
    let mine = eventually(Duration::from_secs(30), "the delivery's result", || async {
        app.task_rows("notifier.webhook")
            .await
            .into_iter()
            .find(|row| row.attempts == 3 && row.state == "succeeded")
    })
    .await;
    assert_eq!(mine.result.as_ref().unwrap()["status"], 204);
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifier.deliveries
         WHERE channel = 'webhook' AND target = $1 AND key = $2",
    )
    .bind(&subscription)
    .bind(body["id"].as_str().unwrap())
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 1);
    // The subscriber to every event got the registration and the order, once each.
    let other = eventually(
        Duration::from_secs(30),
        "the catch-all receiver",
        || async {
            let other = other.lock().unwrap();
            (other.processed.len() >= 2).then(|| other.requests.clone())
        },
    )
    .await;
    let types: HashSet<String> = other
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        HashSet::from([
            "shop.customers.CustomerRegistered".to_owned(),
            "shop.orders.OrderPlaced".to_owned()
        ])
    );
    app.stop().await.unwrap();
}

/// A receiver that never fails.
async fn receiver_for_every_event() -> (String, Shared) {
    receiver(0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_last_attempt_a_delivery_is_dead_lettered_and_a_redrive_delivers_it() {
    let mut settings = test_settings().await;
    settings.tasks.retry_backoff = Duration::from_millis(200);
    settings.notifier.webhooks.max_attempts = 2;
    let app = TestApp::spawn_with(
        settings,
        &[Role::Api, Role::Relay, Role::Notifier, Role::Worker],
    )
    .await;
    // Down for its first two requests: both attempts fail.
    let (url, receiver) = receiver(2).await;
    subscribe(&app, &url, &["shop.customers.CustomerRegistered"]).await;
    app.register_customer("alan@example.com", "Alan Turing")
        .await;

    let dead = eventually(Duration::from_secs(60), "the delivery to die", || async {
        app.task_rows("notifier.webhook")
            .await
            .into_iter()
            .find(|row| row.state == "dead")
    })
    .await;
    assert_eq!(dead.attempts, 2);
    assert!(
        dead.error.as_deref().unwrap().contains("HTTP 500"),
        "{dead:?}"
    );
    assert!(receiver.lock().unwrap().processed.is_empty());

    // The receiver is back: a redrive delivers the event, once.
    app.redrive_tasks();
    eventually(Duration::from_secs(60), "the redriven delivery", || async {
        let row = results::get(&app.app.pool, dead.task_id).await.unwrap()?;
        (row.state == "succeeded").then_some(())
    })
    .await;
    let (requests, processed) = snapshot(&receiver);
    assert_eq!(requests.len(), 3);
    assert_eq!(processed.len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_managed_over_http_and_the_cli_and_bad_ones_name_the_field() {
    let mut settings = test_settings().await;
    settings.notifier.webhooks.allow_private_targets = false;
    let app = TestApp::spawn_with(settings, &[Role::Api]).await;

    let refused = |body: Value| {
        let app = &app;
        async move { problem(app.post("/webhooks/subscriptions", &body).await, 400).await }
    };
    let p = refused(json!({"url": "http://127.0.0.1:9/hooks", "event_types": ["*"]})).await;
    assert_eq!(p["field"], "url");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{p}"
    );
    let p = refused(json!({"url": "http://169.254.169.254/latest", "event_types": ["*"]})).await;
    assert_eq!(p["field"], "url");
    let p = refused(
        json!({"url": "https://hooks.example.com/x", "event_types": ["*", "shop.orders.Nope"]}),
    )
    .await;
    assert_eq!(p["field"], "event_types[1]");
    let p = refused(json!({"url": "https://hooks.example.com/x"})).await;
    assert_eq!(p["field"], "event_types");
    let p = refused(
        json!({"url": "https://hooks.example.com/x", "event_types": ["*"], "secret": "short"}),
    )
    .await;
    assert_eq!(p["field"], "secret");
    let p = refused(
        json!({"url": "https://hooks.example.com/x", "event_types": ["*"], "colour": "red"}),
    )
    .await;
    assert_eq!(p["field"], "colour");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notifier.subscriptions")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing refused was stored");

    let (id, secret) = subscribe(
        &app,
        "https://hooks.example.com/orders",
        &["shop.orders.OrderPaid"],
    )
    .await;
    assert!(secret.starts_with("whsec_") && secret.len() >= 32);
    let listed: Value = app
        .get("/webhooks/subscriptions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["subscriptions"][0]["subscription_id"], id);
    assert!(
        listed["subscriptions"][0].get("secret").is_none(),
        "secrets are shown once"
    );

    // The CLI: the same refusals in one line, and the same store.
    let (code, _, stderr) = app.run_binary(&[
        "ctl",
        "webhook",
        "add",
        "http://10.0.0.8/x",
        "--event-type",
        "*",
    ]);
    assert_ne!(code, 0);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("url: "), "{stderr}");
    let (code, stdout, stderr) = app.run_binary(&[
        "ctl",
        "webhook",
        "add",
        "https://hooks.example.com/all",
        "--event-type",
        "*",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let added: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));
    let (code, stdout, _) = app.run_binary(&["ctl", "webhook", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 2);

    let delete = |id: String| {
        let app = &app;
        async move {
            app.http
                .delete(format!("{}/webhooks/subscriptions/{id}", app.api))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(delete(id.clone()).await, 204);
    assert_eq!(delete(id).await, 404);
    let (code, _, stderr) =
        app.run_binary(&["ctl", "webhook", "remove", &Uuid::new_v4().to_string()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no subscription"), "{stderr}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_at_once_and_the_old_one_only_for_the_overlap() {
    let app = TestApp::spawn_with(
        test_settings().await,
        &[Role::Api, Role::Relay, Role::Notifier, Role::Worker],
    )
    .await;
    let (url, receiver) = receiver(0).await;
    let (id, old) = subscribe(&app, &url, &["shop.customers.CustomerRegistered"]).await;
    let rotate = |body: Value| {
        let app = &app;
        let id = id.clone();
        async move {
            app.post(&format!("/webhooks/subscriptions/{id}/rotate"), &body)
                .await
        }
    };
    // The signature of the `n`th delivery (a customer registered for each).
    let delivered = |n: usize| {
        let receiver = receiver.clone();
        async move {
            eventually(Duration::from_secs(60), "the delivery", || async {
                let (requests, _) = snapshot(&receiver);
                requests.get(n - 1).cloned()
            })
            .await
        }
    };

    // Rotated with an hour's overlap: both secrets sign.
    let response = rotate(json!({"overlap_seconds": 3600})).await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    assert!(rotated["secret_rotated_at"].is_string(), "{rotated}");
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(rotated["previous_secret_expires_at"].clone()).unwrap();
    let ahead = until - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::minutes(59) && ahead <= chrono::Duration::hours(1),
        "{rotated}"
    );
    app.register_customer("ada@example.com", "Ada Lovelace")
        .await;
    let first = delivered(1).await;
    let header = first.header(SIGNATURE_HEADER);
    assert_eq!(header.matches("v1=").count(), 2, "{header}");
    assert!(verify(&new, header, &first.body));
    assert!(verify(&old, header, &first.body));

    // Rotated again, retiring the old one at once, with a secret of our own.
    let own = "whsec_chosen-by-the-subscriber-0001";
    let response = rotate(json!({"secret": own, "overlap_seconds": 0})).await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    assert_eq!(rotated["secret"], own);
    assert!(rotated["previous_secret_expires_at"].is_null(), "{rotated}");
    app.register_customer("grace@example.com", "Grace Hopper")
        .await;
    let second = delivered(2).await;
    let header = second.header(SIGNATURE_HEADER);
    assert_eq!(header.matches("v1=").count(), 1, "{header}");
    assert!(verify(own, header, &second.body));
    assert!(!verify(&new, header, &second.body));
    assert!(!verify(&old, header, &second.body));

    // Refusals name the field and change nothing.
    for (body, field) in [
        (json!({"overlap_seconds": 8 * 24 * 3600}), "overlap_seconds"),
        (json!({"overlap_seconds": -1}), "overlap_seconds"),
        (json!({"secret": "short"}), "secret"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let p = problem(rotate(body.clone()).await, 400).await;
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    let missing = app
        .post(
            &format!("/webhooks/subscriptions/{}/rotate", Uuid::new_v4()),
            &json!({}),
        )
        .await;
    assert_eq!(missing.status(), 404);
    let p = problem(
        app.post("/webhooks/subscriptions/nope/rotate", &json!({}))
            .await,
        400,
    )
    .await;
    assert_eq!(p["field"], "subscription_id");
    let stored = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT secret FROM notifier.subscriptions WHERE subscription_id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
    };
    assert_eq!(stored().await, own, "nothing refused was stored");

    // The CLI: a refusal in one line, then a rotation printed as JSON.
    let (code, _, stderr) = app.run_binary(&["ctl", "webhook", "rotate", &id, "--overlap", "8d"]);
    assert_ne!(code, 0);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--overlap: "), "{stderr}");
    let (code, stdout, stderr) =
        app.run_binary(&["ctl", "webhook", "rotate", &id, "--overlap", "0s", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let rotated: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(rotated["subscription_id"], id.as_str());
    assert_eq!(stored().await, rotated["secret"].as_str().unwrap());
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_a_private_address_is_refused_without_a_request() {
    let mut settings = test_settings().await;
    settings.notifier.webhooks.allow_private_targets = false;
    let app = TestApp::spawn_with(
        settings,
        &[Role::Api, Role::Relay, Role::Notifier, Role::Worker],
    )
    .await;
    let (url, receiver) = receiver(0).await;
    // Stored behind the API's back (as if its name had since been pointed
    // inside): the delivery itself refuses it.
    sqlx::query(
        "INSERT INTO notifier.subscriptions (subscription_id, url, event_types, secret)
         VALUES ($1, $2, ARRAY['*'], 'a-secret-of-enough-length')",
    )
    .bind(Uuid::now_v7())
    .bind(&url)
    .execute(&app.app.pool)
    .await
    .unwrap();
    app.register_customer("mallory@example.com", "Mallory")
        .await;
    let failed = eventually(
        Duration::from_secs(60),
        "the delivery to be refused",
        || async {
            app.task_rows("notifier.webhook")
                .await
                .into_iter()
                .find(|row| row.state == "failed")
        },
    )
    .await;
    assert_eq!(failed.attempts, 1, "refused for good, not retried");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("not a public address"),
        "{failed:?}"
    );
    assert!(receiver.lock().unwrap().requests.is_empty());
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_get_an_email_when_their_order_is_placed_and_when_it_ships() {
    let mut settings = test_settings().await;
    let sink = SmtpSink::start(&mut settings).await;
    let app = TestApp::spawn_with(
        settings,
        &[
            Role::Api,
            Role::Relay,
            Role::Notifier,
            Role::Worker,
            Role::ProcessManager,
        ],
    )
    .await;
    let customer = app
        .register_customer("ada@example.com", "Ada Lovelace")
        .await;
    let order_id = app
        .place_order(&order_body(
            customer,
            &[("TEA-1", 2, 1299), ("MUG", 1, 850)],
        ))
        .await
        .to_string();
    let confirmation = sink
        .wait_for(1, "the order confirmation", |m| m.contains("is confirmed"))
        .await;
    let message = &confirmation[0];
    assert!(
        message.contains(&format!("Subject: Your order {order_id} is confirmed")),
        "{message}"
    );
    assert!(
        message.contains("To: \"Ada Lovelace\" <ada@example.com>"),
        "{message}"
    );
    assert!(message.contains("2 x TEA-1 at 12.99 EUR"), "{message}");
    assert!(message.contains("Total: 34.48 EUR"), "{message}");

    ingest(
        &app,
        Topic::Payments,
        "payments.PaymentCaptured",
        &order_id,
        captured(&order_id, 3448, "EUR"),
    )
    .await;
    // Payments and shipments are different topics, with no order between
    // them: a dispatch read before the capture would be dead-lettered.
    eventually(Duration::from_secs(60), "the order to be paid", || async {
        (status(&app, &order_id).await.0 == "paid").then_some(())
    })
    .await;
    ingest(&app, Topic::Shipments, "warehouse.ShipmentDispatched", &order_id, json!({"shipment_id": "shp-7",
        "order_id": order_id, "carrier": "DHL", "tracking_number": "JD1", "dispatched_at": 1_732_406_500_000_i64})).await;
    let shipped = sink
        .wait_for(1, "the shipment notice", |m| m.contains("has shipped"))
        .await;
    assert!(shipped[0].contains("on its way with DHL"), "{}", shipped[0]);
    assert!(shipped[0].contains("shp-7"), "{}", shipped[0]);

    // Each e-mail was recorded once it was sent, and sent once.
    eventually(Duration::from_secs(30), "both e-mails recorded", || async {
        let sent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM notifier.deliveries WHERE channel = 'email'")
                .fetch_one(&app.app.pool)
                .await
                .unwrap();
        (sent == 2).then_some(())
    })
    .await;
    assert_eq!(sink.messages().len(), 2);
    app.stop().await.unwrap();
}
