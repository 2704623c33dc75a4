//! Every API needs a bearer token with its scope; health and metrics stay open.

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

    for base in [&app.api, &app.query] {
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
