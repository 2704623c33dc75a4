//! The client: registering, the contract, writer schemas by id and their cache.

use std::{sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinSet, time::Instant};
use tributary_registry::Error;
use tributary_schemas::{CONTRACT, subject};

use crate::helpers::{admin_client, record, scratch_pool, spawn_on, spawn_registry};

#[tokio::test]
async fn registers_the_contract_under_prefixed_subjects_and_maps_ids_both_ways() {
    let app = spawn_registry().await;
    let client = app.client();
    let ids = client
        .register_contract("dev.", Duration::from_secs(5))
        .await
        .expect("registered");

    let mut expected_subjects = Vec::new();
    for history in CONTRACT.iter().map(|history| history()) {
        let id = ids
            .id_of(history.full_name)
            .unwrap_or_else(|| panic!("{} has an id", history.full_name));
        assert_eq!(ids.full_name_of(id), Some(history.full_name));
        let subject = subject(&format!("dev.{}", history.topic.name()), history.full_name);
        let latest = app
            .get(&format!("/subjects/{subject}/versions/latest"))
            .await;
        assert_eq!(latest.body["id"], id, "{subject}");
        expected_subjects.push(subject);
    }
    expected_subjects.sort();
    assert_eq!(
        app.get("/subjects").await.body,
        serde_json::json!(expected_subjects)
    );
    assert_eq!(ids.iter().count(), CONTRACT.len());

    let again = client
        .register_contract("dev.", Duration::from_secs(5))
        .await
        .expect("idempotent");
    for history in CONTRACT.iter().map(|history| history()) {
        assert_eq!(again.id_of(history.full_name), ids.id_of(history.full_name));
    }
    assert_eq!(ids.id_of("no.such.Record"), None);
}

#[tokio::test]
async fn fetches_a_writer_schema_once_and_then_serves_it_from_the_cache() {
    let app = spawn_registry().await;
    let schema = record("Thing", r#"{"name":"a","type":"string"}"#);
    let id = app.register("things-value", &schema).await.id() as u32;

    // A client that did not register it, so the first lookup goes to the server.
    let client = app.client();
    let mut lookups = JoinSet::new();
    for _ in 0..8 {
        let client = client.clone();
        lookups.spawn(async move { client.schema_by_id(id).await.expect("found") });
    }
    let writers = lookups.join_all().await;
    let first = writers[0].clone();
    assert!(
        writers.iter().all(|w| Arc::ptr_eq(w, &first)),
        "one shared schema"
    );
    assert_eq!(first.id, id);
    assert_eq!(first.full_name, "test.Thing");
    assert_eq!(
        first.schema,
        apache_avro::Schema::parse_str(&schema).expect("parses")
    );
    assert_eq!(
        app.schema_fetches(),
        1,
        "concurrent lookups share one fetch"
    );

    let later = client.schema_by_id(id).await.expect("cached");
    assert!(Arc::ptr_eq(&later, &first));
    assert_eq!(app.schema_fetches(), 1, "later lookups do not fetch");
}

#[tokio::test]
async fn registering_through_the_client_fills_the_cache() {
    let app = spawn_registry().await;
    let client = app.client();
    let id = client
        .register(
            "things-value",
            &record("Thing", r#"{"name":"a","type":"string"}"#),
        )
        .await
        .expect("registered");
    assert_eq!(
        client.schema_by_id(id).await.expect("known").full_name,
        "test.Thing"
    );
    assert_eq!(app.schema_fetches(), 0);
}

#[tokio::test]
async fn an_unknown_id_and_a_refused_schema_are_registry_errors_with_their_codes() {
    let app = spawn_registry().await;
    let client = app.client();
    let unknown = client.schema_by_id(4242).await.expect_err("no such id");
    assert!(
        matches!(
            unknown,
            Error::Registry {
                status: 404,
                code: 40403,
                ..
            }
        ),
        "{unknown:?}"
    );
    assert!(!unknown.is_unreachable() && !unknown.is_transient());

    let invalid = client
        .register("things-value", "{not avro")
        .await
        .expect_err("invalid");
    assert_eq!(invalid.registry_code(), Some(42201), "{invalid:?}");

    client
        .register(
            "things-value",
            &record("Thing", r#"{"name":"a","type":"string"}"#),
        )
        .await
        .expect("v1");
    let incompatible = client
        .register(
            "things-value",
            &record("Thing", r#"{"name":"a","type":"long"}"#),
        )
        .await
        .expect_err("incompatible");
    match incompatible {
        Error::Registry {
            status,
            code,
            message,
        } => {
            assert_eq!((status, code), (409, 409));
            assert!(message.contains("version 1"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn register_contract_waits_for_a_registry_that_starts_late() {
    let pool = scratch_pool().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("bound");
    drop(listener);
    let url = format!("http://{addr}");

    let client = admin_client(&url);
    let registering =
        tokio::spawn(async move { client.register_contract("", Duration::from_secs(20)).await });
    // Let the client fail at least once before the registry comes up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!registering.is_finished(), "still waiting for the registry");
    let listener = TcpListener::bind(addr)
        .await
        .expect("the port is still free");
    let _app = spawn_on(listener, url, pool);

    let ids = registering
        .await
        .expect("joined")
        .expect("registered once the registry was up");
    assert_eq!(ids.iter().count(), CONTRACT.len());
}

#[tokio::test]
async fn register_contract_gives_up_after_the_wait_when_nothing_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("bound");
    drop(listener);
    let client = admin_client(&format!("http://{addr}"));
    let started = Instant::now();
    let error = client
        .register_contract("", Duration::from_millis(500))
        .await
        .expect_err("nothing listens");
    assert!(error.is_unreachable(), "{error:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}
