//! Every API needs a bearer token with its scope, the schema registry too;
//! health and metrics stay open.

use tributary::Role;
use tributary_platform::{
    Secret,
    auth::{Scope, TokenSettings},
};
use uuid::Uuid;

use crate::helpers::{TestApp, order_body, test_settings};

const READER: &str = "reader-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_need_a_valid_token_with_the_routes_scope() {
    let mut settings = test_settings().await;
    settings.auth.tokens.insert(
        "analyst".into(),
        TokenSettings {
            secret: Secret::new(READER),
            scopes: [Scope::Query].into_iter().collect(),
        },
    );
    let app = TestApp::spawn_with(settings, &[Role::Api, Role::Query]).await;
    let anonymous = reqwest::Client::new();
    let body = order_body(Uuid::now_v7(), &[("TEA-1", 1, 100)]);

    let response = anonymous
        .post(format!("{}/orders", app.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    let response = anonymous
        .post(format!("{}/orders", app.api))
        .bearer_auth("not-a-token-of-ours-at-all")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let response = anonymous
        .post(format!("{}/orders", app.api))
        .bearer_auth(READER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "a query token cannot send commands");
    let response = anonymous
        .get(format!("{}/orders", app.query))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = anonymous
        .get(format!("{}/orders", app.query))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // The registry: any valid token reads, only `admin` registers; Basic
    // credentials are the token's name and secret.
    let registry = &app.app.settings.registry.url;
    let response = anonymous
        .get(format!("{registry}/subjects"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    for reader in [
        anonymous
            .get(format!("{registry}/subjects"))
            .bearer_auth(READER),
        anonymous
            .get(format!("{registry}/subjects"))
            .basic_auth("analyst", Some(READER)),
    ] {
        assert_eq!(reader.send().await.unwrap().status(), 200);
    }
    let schema = serde_json::json!({ "schema": "\"string\"" });
    let response = anonymous
        .post(format!("{registry}/subjects/scratch-value/versions"))
        .bearer_auth(READER)
        .json(&schema)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "a query token cannot register");
    let response = anonymous
        .post(format!("{registry}/subjects/scratch-value/versions"))
        .basic_auth("analyst", Some("not-the-secret-at-all"))
        .json(&schema)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    for base in [&app.api, &app.query, registry] {
        let response = anonymous
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "probes need no token");
    }
    assert_eq!(
        app.count("commands.orders").await,
        0,
        "refused requests write nothing"
    );
    app.stop().await.unwrap();
}
