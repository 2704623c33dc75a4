//! Tokens: any valid one reads, `admin` changes, as a bearer token or as
//! Basic credentials (name and secret); health and metrics stay open.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use reqwest::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tributary_platform::{Secret, auth::AuthSettings};
use tributary_registry::{RegistryClient, RegistrySettings};

use crate::helpers::{
    ADMIN, As, READER, Reply, record, scratch_pool, spawn_registry, spawn_registry_with,
};

const SUBJECT: &str = "things-value";

fn schema() -> String {
    record("Thing", r#"{"name":"a","type":"string"}"#)
}

fn assert_unauthorized(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {reply:?}");
    assert_eq!(
        reply.headers["www-authenticate"], "Bearer, Basic realm=\"tributary\"",
        "{what}"
    );
    assert_eq!(reply.content_type, "application/problem+json", "{what}");
    assert_eq!(reply.body["status"], 401, "{what}: a problem document");
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_as_problem_documents() {
    let app = spawn_registry().await;
    let register = json!({ "schema": schema() });
    for who in [
        As::Nobody,
        As::Bearer("not-a-token-of-ours-at-all"),
        As::Header("Token admin-secret-0123456789"),
    ] {
        let read = app.request_as(who, Method::GET, "/subjects", None).await;
        assert_unauthorized(&read, &format!("GET as {who:?}"));
        let path = format!("/subjects/{SUBJECT}/versions");
        let write = app
            .request_as(who, Method::POST, &path, Some(register.clone()))
            .await;
        assert_unauthorized(&write, &format!("POST as {who:?}"));
    }
    for path in ["/health/live", "/health/ready", "/metrics"] {
        let reply = app.request_as(As::Nobody, Method::GET, path, None).await;
        assert_eq!(reply.status, 200, "{path} needs no token");
    }
    assert_eq!(
        app.get("/subjects").await.body,
        json!([]),
        "nothing registered"
    );
}

#[tokio::test]
async fn a_query_token_reads_but_cannot_register_or_change_levels() {
    let app = spawn_registry().await;
    let id = app.register(SUBJECT, &schema()).await.id();
    let reader = As::Bearer(READER.1);

    for path in [
        "/subjects".to_owned(),
        "/schemas/types".to_owned(),
        format!("/schemas/ids/{id}"),
        format!("/subjects/{SUBJECT}/versions/latest"),
        "/config".to_owned(),
    ] {
        let reply = app.request_as(reader, Method::GET, &path, None).await;
        assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
    }
    // Looking a schema up and testing compatibility change nothing: reads.
    let body = json!({ "schema": schema() });
    let found = app
        .request_as(
            reader,
            Method::POST,
            &format!("/subjects/{SUBJECT}"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (found.status, found.body["id"].as_u64()),
        (200, Some(id)),
        "{found:?}"
    );
    let tested = app
        .request_as(
            reader,
            Method::POST,
            &format!("/compatibility/subjects/{SUBJECT}/versions/latest"),
            Some(body),
        )
        .await;
    assert_eq!(tested.body["is_compatible"], true, "{tested:?}");

    let v2 = record(
        "Thing",
        r#"{"name":"a","type":"string"},{"name":"b","type":"int","default":0}"#,
    );
    let level = json!({ "compatibility": "NONE" });
    for (method, path, body) in [
        (
            Method::POST,
            format!("/subjects/{SUBJECT}/versions"),
            Some(json!({ "schema": v2 })),
        ),
        (Method::PUT, "/config".to_owned(), Some(level.clone())),
        (Method::PUT, format!("/config/{SUBJECT}"), Some(level)),
        (Method::DELETE, format!("/config/{SUBJECT}"), None),
    ] {
        let reply = app.request_as(reader, method.clone(), &path, body).await;
        assert_eq!(reply.status, 403, "{method} {path}: {reply:?}");
        assert_eq!(reply.content_type, "application/problem+json");
        assert!(
            reply.body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("`admin`"),
            "{reply:?}"
        );
    }
    assert_eq!(
        app.get(&format!("/subjects/{SUBJECT}/versions")).await.body,
        json!([1]),
        "the refused registration wrote nothing"
    );
    assert_eq!(
        app.get("/config").await.body["compatibilityLevel"],
        "BACKWARD_TRANSITIVE"
    );
}

#[tokio::test]
async fn an_admin_token_registers_and_sets_levels() {
    let app = spawn_registry().await;
    let admin = As::Bearer(ADMIN.1);
    let path = format!("/subjects/{SUBJECT}/versions");
    let registered = app
        .request_as(
            admin,
            Method::POST,
            &path,
            Some(json!({ "schema": schema() })),
        )
        .await;
    assert!(registered.id() >= 1);
    let level = json!({ "compatibility": "FULL" });
    let config = format!("/config/{SUBJECT}");
    let set = app
        .request_as(admin, Method::PUT, &config, Some(level))
        .await;
    assert_eq!(
        (set.status, &set.body["compatibility"]),
        (200, &json!("FULL"))
    );
    let deleted = app.request_as(admin, Method::DELETE, &config, None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
}

#[tokio::test]
async fn basic_credentials_are_a_tokens_name_and_secret() {
    let app = spawn_registry().await;
    let path = format!("/subjects/{SUBJECT}/versions");
    let body = json!({ "schema": schema() });

    let registered = app
        .request_as(
            As::Basic(ADMIN.0, ADMIN.1),
            Method::POST,
            &path,
            Some(body.clone()),
        )
        .await;
    assert!(registered.id() >= 1);
    let read = app
        .request_as(As::Basic(READER.0, READER.1), Method::GET, &path, None)
        .await;
    assert_eq!((read.status, &read.body), (200, &json!([1])));
    let refused = app
        .request_as(
            As::Basic(READER.0, READER.1),
            Method::POST,
            &path,
            Some(body.clone()),
        )
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");

    for (who, what) in [
        (
            As::Basic(ADMIN.0, "not-the-admin-secret-at-all"),
            "a wrong secret",
        ),
        (As::Basic("nobody", ADMIN.1), "an unknown name"),
        (As::Basic(READER.0, ADMIN.1), "another token's secret"),
        (As::Basic(ADMIN.1, ""), "the secret as the name"),
        (As::Header("Basic not base64!"), "malformed credentials"),
    ] {
        let reply = app
            .request_as(who, Method::POST, &path, Some(body.clone()))
            .await;
        assert_unauthorized(&reply, what);
    }
}

#[tokio::test]
async fn our_client_sends_its_token_and_reports_refusals_with_their_reason() {
    let app = spawn_registry().await;
    let id = app.register(SUBJECT, &schema()).await.id() as u32;

    let anonymous = RegistryClient::new(&app.url, None).expect("valid URL");
    let error = anonymous.schema_by_id(id).await.expect_err("no token");
    assert_eq!(error.status(), Some(401), "{error:?}");
    assert!(!error.is_transient());

    let reader = RegistryClient::new(&app.url, Some(&Secret::new(READER.1))).expect("valid URL");
    assert_eq!(
        reader
            .schema_by_id(id)
            .await
            .expect("any token reads")
            .full_name,
        "test.Thing"
    );
    let error = reader
        .register_contract("", Duration::from_secs(5))
        .await
        .expect_err("registering needs admin");
    assert_eq!(error.status(), Some(403), "{error:?}");
    assert!(error.to_string().contains("`admin` scope"), "{error}");
    assert!(
        !format!("{reader:?}").contains(READER.1),
        "the client's Debug shows no secret"
    );
}

#[tokio::test]
async fn with_auth_disabled_the_registry_needs_no_token() {
    let app = spawn_registry_with(Arc::new(AuthSettings {
        tokens: BTreeMap::new(),
        disabled: true,
    }))
    .await;
    let path = format!("/subjects/{SUBJECT}/versions");
    let reply = app
        .request_as(
            As::Nobody,
            Method::POST,
            &path,
            Some(json!({ "schema": schema() })),
        )
        .await;
    assert!(reply.id() >= 1);
}

#[tokio::test]
async fn serving_refuses_to_start_without_tokens() {
    let pool = scratch_pool().await;
    let settings = RegistrySettings {
        listen: "127.0.0.1:0".parse().expect("an address"),
        ..RegistrySettings::default()
    };
    let served = tributary_registry::serve(
        &settings,
        pool,
        Arc::new(AuthSettings::default()),
        CancellationToken::new(),
    )
    .await;
    let error = served.expect_err("no tokens configured");
    assert!(
        error.to_string().contains("auth.tokens is empty"),
        "{error}"
    );
}
