//! Confluent's own Python client, serializer and deserializer against the registry.

use std::process::Command;

use crate::helpers::spawn_registry;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/python/registry_client.py"
);

#[tokio::test]
async fn confluent_kafkas_python_client_works_against_the_registry() {
    let app = spawn_registry().await;
    let url = app.url.clone();
    let output =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(SCRIPT).arg(url).output())
            .await
            .expect("joined")
            .expect("python3 runs");
    assert!(
        output.status.success(),
        "{SCRIPT} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
