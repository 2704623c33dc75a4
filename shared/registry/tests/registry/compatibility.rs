//! Every compatibility level, transitive or not, on registration and on the
//! compatibility test endpoints.

use serde_json::json;

use crate::helpers::{TestRegistry, record, spawn_registry};

const A: &str = r#"{"name":"a","type":"string"}"#;
const B_REQUIRED: &str = r#"{"name":"b","type":"int"}"#;
const B_DEFAULT: &str = r#"{"name":"b","type":"int","default":0}"#;

fn schema(fields: &[&str]) -> String {
    record("Thing", &fields.join(","))
}

/// Registers `versions` in order under a new subject at `level`, asserting
/// each is accepted, then tries `next` and returns the reply.
async fn after(
    app: &TestRegistry,
    subject: &str,
    level: &str,
    versions: &[String],
    next: &str,
) -> crate::helpers::Reply {
    app.set_level(Some(subject), level).await;
    for version in versions {
        let reply = app.register(subject, version).await;
        assert_eq!(
            reply.status, 200,
            "{level}: setting up {version}: {reply:?}"
        );
    }
    app.register(subject, next).await
}

#[tokio::test]
async fn each_level_accepts_and_refuses_the_changes_it_should() {
    let app = spawn_registry().await;
    let v1 = schema(&[A]);
    // (level, change from v1, accepted?)
    let cases = [
        ("BACKWARD", schema(&[A, B_DEFAULT]), true),
        ("BACKWARD", schema(&[A, B_REQUIRED]), false),
        ("BACKWARD", schema(&[]), true),
        ("FORWARD", schema(&[A, B_REQUIRED]), true),
        ("FORWARD", schema(&[]), false),
        ("FULL", schema(&[A, B_DEFAULT]), true),
        ("FULL", schema(&[A, B_REQUIRED]), false),
        ("FULL", schema(&[]), false),
        (
            "NONE",
            record("Thing", r#"{"name":"a","type":"long"}"#),
            true,
        ),
        (
            "BACKWARD",
            record("Thing", r#"{"name":"a","type":"long"}"#),
            false,
        ),
    ];
    for (i, (level, next, accepted)) in cases.iter().enumerate() {
        let subject = format!("case{i}-value");
        let reply = after(&app, &subject, level, std::slice::from_ref(&v1), next).await;
        let expected = if *accepted { 200 } else { 409 };
        assert_eq!(reply.status, expected, "{level} {next}: {reply:?}");
        if !accepted {
            assert_eq!(reply.code(), Some(409));
        }
    }
}

#[tokio::test]
async fn plain_levels_check_only_the_latest_version_and_transitive_levels_all() {
    let app = spawn_registry().await;
    // Backward and full: v3 reads v2's data (b present) but not v1's (b missing, no default).
    let backward = [schema(&[A]), schema(&[A, B_DEFAULT])];
    let backward_v3 = schema(&[A, B_REQUIRED]);
    // Forward: v2 reads v3's data (b defaulted) but v1 cannot (b required).
    let forward = [schema(&[A, B_REQUIRED]), schema(&[A, B_DEFAULT])];
    let forward_v3 = schema(&[A]);
    let cases = [
        ("BACKWARD", &backward, &backward_v3, true),
        ("BACKWARD_TRANSITIVE", &backward, &backward_v3, false),
        ("FULL", &backward, &backward_v3, true),
        ("FULL_TRANSITIVE", &backward, &backward_v3, false),
        ("FORWARD", &forward, &forward_v3, true),
        ("FORWARD_TRANSITIVE", &forward, &forward_v3, false),
    ];
    for (level, history, v3, accepted) in cases {
        let subject = format!("{}-value", level.to_lowercase());
        let reply = after(&app, &subject, level, history, v3).await;
        if accepted {
            assert_eq!(reply.status, 200, "{level}: {reply:?}");
            assert_eq!(
                app.get(&format!("/subjects/{subject}/versions")).await.body,
                json!([1, 2, 3])
            );
        } else {
            assert_eq!(
                (reply.status, reply.code()),
                (409, Some(409)),
                "{level}: {reply:?}"
            );
            assert!(
                reply.message().contains("version 1"),
                "{level}: names version 1: {}",
                reply.message()
            );
            assert!(
                reply.message().contains(level),
                "{level}: names the level: {}",
                reply.message()
            );
        }
    }
}

#[tokio::test]
async fn a_refusal_says_why_and_against_which_version() {
    let app = spawn_registry().await;
    app.register("things-value", &schema(&[A])).await.id();
    let reply = app
        .register("things-value", &schema(&[A, B_REQUIRED]))
        .await;
    assert_eq!((reply.status, reply.code()), (409, Some(409)));
    let message = reply.message();
    assert!(message.contains("things-value"), "{message}");
    assert!(message.contains("version 1"), "{message}");
    assert!(message.contains("BACKWARD_TRANSITIVE"), "{message}");
    assert!(message.contains('b'), "names the field: {message}");
    assert_eq!(
        app.get("/subjects/things-value/versions").await.body,
        json!([1]),
        "nothing stored"
    );
}

#[tokio::test]
async fn the_default_level_is_backward_transitive() {
    let app = spawn_registry().await;
    for version in [schema(&[A]), schema(&[A, B_DEFAULT])] {
        app.register("things-value", &version).await.id();
    }
    let reply = app
        .register("things-value", &schema(&[A, B_REQUIRED]))
        .await;
    assert_eq!(reply.status, 409, "v3 cannot read v1: {reply:?}");
}

#[tokio::test]
async fn a_removed_enum_symbol_is_refused_as_only_partially_compatible() {
    let app = spawn_registry().await;
    let with_symbols = |symbols: &str| {
        record(
            "Thing",
            &format!(r#"{{"name":"s","type":{{"type":"enum","name":"S","symbols":[{symbols}]}}}}"#),
        )
    };
    app.register("things-value", &with_symbols(r#""A","B""#))
        .await
        .id();
    let reply = app.register("things-value", &with_symbols(r#""A""#)).await;
    assert_eq!(reply.status, 409, "{reply:?}");
}

#[tokio::test]
async fn tests_compatibility_against_one_version_or_the_levels_versions() {
    let app = spawn_registry().await;
    app.set_level(Some("things-value"), "BACKWARD").await;
    app.register("things-value", &schema(&[A])).await.id();
    app.register("things-value", &schema(&[A, B_DEFAULT]))
        .await
        .id();
    let v3 = json!({ "schema": schema(&[A, B_REQUIRED]) });

    let latest = app
        .post(
            "/compatibility/subjects/things-value/versions/latest?normalize=False&verbose=True",
            v3.clone(),
        )
        .await;
    assert_eq!(latest.body["is_compatible"], true, "{latest:?}");
    let first = app
        .post(
            "/compatibility/subjects/things-value/versions/1?verbose=true",
            v3.clone(),
        )
        .await;
    assert_eq!(first.body["is_compatible"], false, "{first:?}");
    assert!(
        first.body["messages"][0]
            .as_str()
            .expect("a message")
            .contains("version 1")
    );

    // Against the level: BACKWARD checks the latest only; BACKWARD_TRANSITIVE all.
    let level = app
        .post("/compatibility/subjects/things-value/versions", v3.clone())
        .await;
    assert_eq!(level.body["is_compatible"], true, "{level:?}");
    app.set_level(Some("things-value"), "BACKWARD_TRANSITIVE")
        .await;
    let level = app
        .post("/compatibility/subjects/things-value/versions", v3.clone())
        .await;
    assert_eq!(level.body["is_compatible"], false, "{level:?}");

    let unknown_subject = app
        .post(
            "/compatibility/subjects/nothing/versions/latest",
            v3.clone(),
        )
        .await;
    assert_eq!(unknown_subject.code(), Some(40401));
    let unknown_version = app
        .post(
            "/compatibility/subjects/things-value/versions/9",
            v3.clone(),
        )
        .await;
    assert_eq!(unknown_version.code(), Some(40402));
    let nothing_yet = app
        .post("/compatibility/subjects/nothing/versions", v3)
        .await;
    assert_eq!(nothing_yet.body["is_compatible"], true, "{nothing_yet:?}");
    let invalid = app
        .post(
            "/compatibility/subjects/things-value/versions/latest",
            json!({ "schema": "nope" }),
        )
        .await;
    assert_eq!(invalid.code(), Some(42201));
}
