//! Registering, reading and looking up schemas; the error codes.

use std::collections::HashSet;

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::helpers::{record, spawn_registry};

fn v1() -> String {
    record("Thing", r#"{"name":"a","type":"string"}"#)
}

#[tokio::test]
async fn registers_a_schema_and_serves_it_by_id_with_the_registry_content_type() {
    let app = spawn_registry().await;
    let reply = app.register("things-value", &v1()).await;
    assert_eq!(reply.content_type, "application/vnd.schemaregistry.v1+json");
    let id = reply.id();

    let by_id = app
        .get(&format!(
            "/schemas/ids/{id}?subject=things-value&format=serialized"
        ))
        .await;
    assert_eq!(by_id.status, 200, "{by_id:?}");
    assert!(
        by_id.body.get("schemaType").is_none(),
        "Confluent omits schemaType for Avro"
    );
    let schema: Value =
        serde_json::from_str(by_id.body["schema"].as_str().expect("schema text")).expect("JSON");
    assert_eq!(schema["name"], "Thing");
    assert_eq!(schema["namespace"], "test");

    let raw = app.get(&format!("/schemas/ids/{id}/schema")).await;
    assert_eq!(raw.body, schema);
    let types = app.get("/schemas/types").await;
    assert_eq!(types.body, json!(["AVRO"]));
}

#[tokio::test]
async fn registering_the_same_schema_again_returns_its_id_without_a_new_version() {
    let app = spawn_registry().await;
    let id = app.register("things-value", &v1()).await.id();
    // Same schema, other spelling: whitespace, key order, explicit namespace in the name.
    let respelled = r#"{ "fields": [ {"type": "string", "name": "a"} ], "name": "test.Thing", "type": "record" }"#;
    assert_eq!(app.register("things-value", respelled).await.id(), id);
    assert_eq!(
        app.get("/subjects/things-value/versions").await.body,
        json!([1])
    );
}

#[tokio::test]
async fn a_schema_with_a_different_default_is_a_different_schema() {
    let app = spawn_registry().await;
    let with_default = |default: u32| {
        record(
            "Thing",
            &format!(r#"{{"name":"n","type":"int","default":{default}}}"#),
        )
    };
    let first = app.register("things-value", &with_default(1)).await.id();
    let second = app.register("things-value", &with_default(2)).await.id();
    assert_ne!(first, second, "defaults are part of a schema's identity");
    assert_eq!(
        app.get("/subjects/things-value/versions").await.body,
        json!([1, 2])
    );
}

#[tokio::test]
async fn the_same_schema_under_two_subjects_shares_one_id() {
    let app = spawn_registry().await;
    let first = app.register("a-value", &v1()).await.id();
    let second = app.register("b-value", &v1()).await.id();
    assert_eq!(first, second);
    let versions = app.get(&format!("/schemas/ids/{first}/versions")).await;
    assert_eq!(
        versions.body,
        json!([{"subject": "a-value", "version": 1}, {"subject": "b-value", "version": 1}])
    );
    let subjects = app.get(&format!("/schemas/ids/{first}/subjects")).await;
    assert_eq!(subjects.body, json!(["a-value", "b-value"]));
}

#[tokio::test]
async fn serves_versions_the_latest_and_a_version_schema() {
    let app = spawn_registry().await;
    let id1 = app.register("things-value", &v1()).await.id();
    let v2 = record(
        "Thing",
        r#"{"name":"a","type":"string"},{"name":"b","type":"int","default":0}"#,
    );
    let id2 = app.register("things-value", &v2).await.id();

    assert_eq!(
        app.get("/subjects/things-value/versions").await.body,
        json!([1, 2])
    );
    let first = app.get("/subjects/things-value/versions/1").await;
    assert_eq!(first.body["subject"], "things-value");
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["id"], id1);
    for latest in ["latest", "-1"] {
        let reply = app
            .get(&format!("/subjects/things-value/versions/{latest}"))
            .await;
        assert_eq!(
            (reply.body["version"].clone(), reply.body["id"].clone()),
            (json!(2), json!(id2))
        );
    }
    let raw = app.get("/subjects/things-value/versions/2/schema").await;
    assert_eq!(raw.status, 200);
    let schema: Value = serde_json::from_str(&raw.text).expect("the raw schema is JSON");
    assert_eq!(schema["fields"][1]["default"], 0);
}

#[tokio::test]
async fn looks_up_a_schema_under_a_subject() {
    let app = spawn_registry().await;
    let id = app.register("things-value", &v1()).await.id();
    let found = app
        .post(
            "/subjects/things-value?normalize=False&deleted=False",
            json!({ "schema": v1() }),
        )
        .await;
    assert_eq!(found.status, 200, "{found:?}");
    assert_eq!(found.body["id"], id);
    assert_eq!(found.body["version"], 1);
    assert_eq!(found.body["subject"], "things-value");
    assert!(found.body["schema"].is_string());

    let other = record("Other", r#"{"name":"x","type":"long"}"#);
    let missing = app
        .post("/subjects/things-value", json!({ "schema": other }))
        .await;
    assert_eq!((missing.status, missing.code()), (404, Some(40403)));
    let no_subject = app
        .post("/subjects/nothing-value", json!({ "schema": v1() }))
        .await;
    assert_eq!((no_subject.status, no_subject.code()), (404, Some(40401)));
}

#[tokio::test]
async fn lists_subjects_in_order() {
    let app = spawn_registry().await;
    assert_eq!(app.get("/subjects").await.body, json!([]));
    app.register("b-value", &v1()).await.id();
    app.register("a-value", &v1()).await.id();
    assert_eq!(
        app.get("/subjects?deleted=False").await.body,
        json!(["a-value", "b-value"])
    );
}

#[tokio::test]
async fn unknown_subjects_versions_and_ids_have_their_confluent_codes() {
    let app = spawn_registry().await;
    app.register("things-value", &v1()).await.id();
    let cases = [
        ("/subjects/nothing/versions", 404, 40401),
        ("/subjects/nothing/versions/1", 404, 40401),
        ("/subjects/nothing/versions/latest", 404, 40401),
        ("/subjects/things-value/versions/7", 404, 40402),
        ("/subjects/things-value/versions/7/schema", 404, 40402),
        ("/subjects/things-value/versions/0", 422, 42202),
        ("/subjects/things-value/versions/one", 422, 42202),
        ("/schemas/ids/999", 404, 40403),
        ("/schemas/ids/999/versions", 404, 40403),
        ("/schemas/ids/abc", 404, 40403),
    ];
    for (path, status, code) in cases {
        let reply = app.get(path).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, Some(code)),
            "{path}: {reply:?}"
        );
        assert!(!reply.message().is_empty(), "{path}: a message");
        assert_eq!(reply.content_type, "application/vnd.schemaregistry.v1+json");
    }
    let unknown_route = app.get("/nowhere").await;
    assert_eq!(
        (unknown_route.status, unknown_route.code()),
        (404, Some(404))
    );
}

#[tokio::test]
async fn refuses_an_invalid_schema_with_the_parsers_message() {
    let app = spawn_registry().await;
    let not_json = app.register("things-value", "{not json").await;
    assert_eq!(
        (not_json.status, not_json.code()),
        (422, Some(42201)),
        "{not_json:?}"
    );
    let unknown_type = app
        .register(
            "things-value",
            &record("Thing", r#"{"name":"a","type":"strang"}"#),
        )
        .await;
    assert_eq!(
        (unknown_type.status, unknown_type.code()),
        (422, Some(42201))
    );
    assert!(
        unknown_type.message().contains("strang"),
        "{unknown_type:?}"
    );
    assert_eq!(
        app.get("/subjects").await.body,
        json!([]),
        "nothing was stored"
    );
}

#[tokio::test]
async fn refuses_other_schema_types_and_references() {
    let app = spawn_registry().await;
    let protobuf = json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" });
    let reply = app.post("/subjects/things-value/versions", protobuf).await;
    assert_eq!((reply.status, reply.code()), (422, Some(42201)));
    assert!(reply.message().contains("PROTOBUF"), "{reply:?}");

    let with_refs = json!({ "schema": v1(), "schemaType": "AVRO", "references": [{"name": "x", "subject": "y", "version": 1}] });
    let reply = app.post("/subjects/things-value/versions", with_refs).await;
    assert_eq!((reply.status, reply.code()), (422, Some(42201)));

    let explicit_avro = json!({ "schema": v1(), "schemaType": "AVRO", "references": [] });
    assert_eq!(
        app.post("/subjects/things-value/versions", explicit_avro)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn refuses_subject_names_that_are_too_long_or_hold_control_characters() {
    let app = spawn_registry().await;
    let long = "s".repeat(256);
    let reply = app.register(&long, &v1()).await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, Some(42208)),
        "{reply:?}"
    );
    assert!(reply.message().contains("255"), "{reply:?}");
    let reply = app.register("bad%0Asubject", &v1()).await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, Some(42208)),
        "{reply:?}"
    );
    assert!(reply.message().contains("control"), "{reply:?}");
    assert_eq!(app.register(&"s".repeat(255), &v1()).await.status, 200);
}

#[tokio::test]
async fn subject_names_may_hold_encoded_slashes_and_spaces() {
    let app = spawn_registry().await;
    let id = app.register("team%2Fthings%20value", &v1()).await.id();
    assert_eq!(
        app.get("/subjects").await.body,
        json!(["team/things value"])
    );
    assert_eq!(
        app.get("/subjects/team%2Fthings%20value/versions/1")
            .await
            .body["id"],
        id
    );
}

#[tokio::test]
async fn refuses_bodies_over_one_mebibyte_and_malformed_json() {
    let app = spawn_registry().await;
    let huge = json!({ "schema": format!("\"{}\"", "x".repeat(1024 * 1024)) });
    let reply = app.post("/subjects/things-value/versions", huge).await;
    assert_eq!(
        (reply.status, reply.code()),
        (413, Some(413)),
        "{}",
        reply.text
    );

    let malformed = app
        .request(
            reqwest::Method::POST,
            "/subjects/things-value/versions",
            None,
        )
        .await;
    assert!(
        malformed.status >= 400 && malformed.code().is_some(),
        "{malformed:?}"
    );
}

#[tokio::test]
async fn the_router_alone_refuses_oversized_bodies_before_reading_them() {
    let pool = crate::helpers::scratch_pool().await;
    let body = vec![b' '; 2 * 1024 * 1024];
    let request = axum::http::Request::post("/subjects/s/versions")
        .header(
            "authorization",
            format!("Bearer {}", crate::helpers::ADMIN.1),
        )
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(axum::body::Body::from(body))
        .expect("a request");
    let response = tributary_registry::router(pool, crate::helpers::auth())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn concurrent_registrations_to_one_subject_take_versions_one_to_n() {
    let app = std::sync::Arc::new(spawn_registry().await);
    const N: usize = 12;
    let mut tasks = JoinSet::new();
    for i in 0..N {
        let app = app.clone();
        // Each adds its own field with a default: compatible in any order.
        let schema = record(
            "Thing",
            &format!(
                r#"{{"name":"a","type":"string"}},{{"name":"f{i}","type":"int","default":0}}"#
            ),
        );
        tasks.spawn(async move { app.register("things-value", &schema).await.id() });
    }
    let ids: HashSet<u64> = tasks.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), N, "every schema got its own id");
    let versions = app.get("/subjects/things-value/versions").await.body;
    assert_eq!(versions, json!((1..=N).collect::<Vec<_>>()));
}

#[tokio::test]
async fn concurrent_registrations_of_one_schema_under_many_subjects_share_one_id() {
    let app = std::sync::Arc::new(spawn_registry().await);
    let mut tasks = JoinSet::new();
    for i in 0..8 {
        let app = app.clone();
        tasks.spawn(async move { app.register(&format!("s{i}-value"), &v1()).await.id() });
    }
    let ids: HashSet<u64> = tasks.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}
