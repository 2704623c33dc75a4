//! The binary refuses bad configuration with one line naming the key, and a non-zero exit.

use crate::helpers::tributary;

#[test]
fn a_bad_value_is_refused_in_one_line_naming_the_key() {
    let (code, _, stderr) = tributary(&[("TRIBUTARY__RELAY__BATCH_SIZE", "lots")], &["config"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("relay.batch_size"), "{stderr}");
}

#[test]
fn an_unknown_key_is_refused_naming_it() {
    let (code, _, stderr) = tributary(&[("TRIBUTARY__PROJECTOR__BATCH", "10")], &["config"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("batch"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_refused() {
    let (code, _, stderr) = tributary(&[], &["--config", "/nonexistent/tributary.toml", "config"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/tributary.toml"), "{stderr}");
}

#[test]
fn the_effective_configuration_never_prints_secrets() {
    let (code, stdout, _) = tributary(
        &[
            ("DATABASE_URL", "postgres://app:hunter2@db.internal/shop"),
            ("TRIBUTARY__KAFKA__SASL_PASSWORD", "s3cret"),
            ("KAFKA_BROKERS", "kafka-1:9092"),
        ],
        &["config"],
    );
    assert_eq!(code, 0);
    assert!(
        !stdout.contains("hunter2") && !stdout.contains("s3cret"),
        "{stdout}"
    );
    let settings: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(settings["database"]["url"], "***");
    assert_eq!(settings["kafka"]["brokers"], "kafka-1:9092");
}

#[test]
fn a_single_role_without_brokers_is_refused_clearly() {
    let (code, _, stderr) = tributary(
        &[
            (
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            ("TRIBUTARY__DATABASE__MIGRATE", "false"),
        ],
        &["run", "relay"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("kafka.brokers is not set"), "{stderr}");
}

#[test]
fn an_http_role_without_tokens_refuses_to_start() {
    for role in ["query", "registry"] {
        let (code, _, stderr) = tributary(
            &[
                (
                    "DATABASE_URL",
                    "postgres://postgres@127.0.0.1:5432/postgres",
                ),
                ("TRIBUTARY__DATABASE__MIGRATE", "false"),
                ("KAFKA_BROKERS", "127.0.0.1:1"),
            ],
            &["run", role],
        );
        assert_eq!(code, 1, "{role}");
        assert!(stderr.contains("auth.tokens is empty"), "{role}: {stderr}");
    }
}
