//! Confluent's own Python client, serializer and deserializer against the
//! registry, authenticating with HTTP Basic (`basic.auth.user.info`).

use std::process::Command;

use crate::helpers::{ADMIN, spawn_registry};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/python/registry_client.py"
);

#[tokio::test]
async fn confluent_kafkas_python_client_works_against_the_registry() {
    let app = spawn_registry().await;
    let url = app.url.clone();
    let user_info = format!("{}:{}", ADMIN.0, ADMIN.1);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(SCRIPT)
            .arg(url)
            .env("REGISTRY_USER_INFO", user_info)
            .output()
    })
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
