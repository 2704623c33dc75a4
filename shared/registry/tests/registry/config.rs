//! Global and per-subject compatibility levels.

use serde_json::json;

use crate::helpers::{record, spawn_registry};

#[tokio::test]
async fn the_global_level_defaults_to_backward_transitive_and_can_be_changed() {
    let app = spawn_registry().await;
    let reply = app.get("/config").await;
    assert_eq!(
        reply.body,
        json!({ "compatibilityLevel": "BACKWARD_TRANSITIVE" })
    );
    assert_eq!(reply.content_type, "application/vnd.schemaregistry.v1+json");
    let set = app.put("/config", json!({ "compatibility": "FULL" })).await;
    assert_eq!(set.body, json!({ "compatibility": "FULL" }));
    assert_eq!(
        app.get("/config").await.body,
        json!({ "compatibilityLevel": "FULL" })
    );
}

#[tokio::test]
async fn a_subject_level_overrides_the_global_one_until_deleted() {
    let app = spawn_registry().await;
    let missing = app.get("/config/things-value").await;
    assert_eq!(
        (missing.status, missing.code()),
        (404, Some(40408)),
        "{missing:?}"
    );
    let defaulted = app.get("/config/things-value?defaultToGlobal=true").await;
    assert_eq!(
        defaulted.body,
        json!({ "compatibilityLevel": "BACKWARD_TRANSITIVE" })
    );

    let set = app
        .put("/config/things-value", json!({ "compatibility": "NONE" }))
        .await;
    assert_eq!(set.body, json!({ "compatibility": "NONE" }));
    assert_eq!(
        app.get("/config/things-value").await.body,
        json!({ "compatibilityLevel": "NONE" })
    );
    assert_eq!(
        app.get("/config").await.body,
        json!({ "compatibilityLevel": "BACKWARD_TRANSITIVE" })
    );

    // NONE lets an incompatible change through for this subject only.
    let v1 = record("Thing", r#"{"name":"a","type":"string"}"#);
    let v2 = record("Thing", r#"{"name":"a","type":"long"}"#);
    for subject in ["things-value", "other-value"] {
        app.register(subject, &v1).await.id();
    }
    assert_eq!(app.register("things-value", &v2).await.status, 200);
    assert_eq!(app.register("other-value", &v2).await.status, 409);

    let deleted = app.delete("/config/things-value").await;
    assert_eq!(deleted.body, json!({ "compatibilityLevel": "NONE" }));
    assert_eq!(app.get("/config/things-value").await.code(), Some(40408));
    assert_eq!(app.delete("/config/things-value").await.code(), Some(40408));

    app.set_level(None, "FORWARD").await;
    let defaulted = app.get("/config/things-value?defaultToGlobal=True").await;
    assert_eq!(defaulted.body, json!({ "compatibilityLevel": "FORWARD" }));
}

#[tokio::test]
async fn refuses_unknown_levels() {
    let app = spawn_registry().await;
    for path in ["/config", "/config/things-value"] {
        let reply = app.put(path, json!({ "compatibility": "SIDEWAYS" })).await;
        assert_eq!(
            (reply.status, reply.code()),
            (422, Some(42203)),
            "{path}: {reply:?}"
        );
        assert!(reply.message().contains("SIDEWAYS"), "{reply:?}");
        let empty = app.put(path, json!({})).await;
        assert_eq!(empty.code(), Some(42203), "{path}: {empty:?}");
    }
    assert_eq!(
        app.get("/config").await.body,
        json!({ "compatibilityLevel": "BACKWARD_TRANSITIVE" })
    );
}
