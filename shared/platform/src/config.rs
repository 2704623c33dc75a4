//! Layered configuration.
//!
//! Precedence, lowest first:
//! 1. built-in defaults (every settings struct is `#[serde(default)]`);
//! 2. an optional TOML file (`--config FILE`);
//! 3. the conventional `DATABASE_URL` and `KAFKA_BROKERS` variables;
//! 4. `TRIBUTARY__SECTION__KEY` variables, e.g. `TRIBUTARY__RELAY__BATCH_SIZE=500`.
//!
//! Settings structs use `deny_unknown_fields`, so a misspelt key in the file or
//! the environment is refused at start-up with a message naming it.

use std::{collections::HashMap, path::Path};

use serde::de::DeserializeOwned;

/// Variables that map onto a key without the `TRIBUTARY__` prefix.
const CONVENTIONAL: [(&str, &str); 2] = [
    ("DATABASE_URL", "TRIBUTARY__DATABASE__URL"),
    ("KAFKA_BROKERS", "TRIBUTARY__KAFKA__BROKERS"),
];

/// A configuration that could not be loaded; the message names the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// The process environment, for [`load`].
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// Loads settings from defaults, an optional file and `env` (see the module docs).
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<T, ConfigError> {
    let mut vars: HashMap<String, String> = env
        .iter()
        .filter(|(key, _)| key.starts_with("TRIBUTARY__"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    for (conventional, key) in CONVENTIONAL {
        if let Some(value) = env.get(conventional) {
            vars.entry(key.to_owned()).or_insert_with(|| value.clone());
        }
    }

    let mut builder = config::Config::builder();
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError(format!(
                "file {} does not exist",
                file.display()
            )));
        }
        builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
    }
    let built = builder
        .add_source(
            config::Environment::with_prefix("TRIBUTARY")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(vars.into_iter().collect())),
        )
        .build()
        .map_err(|e| ConfigError(e.to_string()))?;
    built.try_deserialize().map_err(|e| ConfigError(explain(e)))
}

/// Environment keys arrive lower-cased; say which variable a key came from.
fn explain(error: config::ConfigError) -> String {
    let message = error.to_string();
    match message.rsplit_once(" for key `") {
        Some((_, key)) => {
            let key = key.trim_end_matches('`');
            let variable = format!("TRIBUTARY__{}", key.replace('.', "__").to_uppercase());
            format!("{message} (file key `{key}` or variable {variable})")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        database: Database,
        relay: Relay,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Database {
        url: String,
    }

    impl Default for Database {
        fn default() -> Self {
            Self {
                url: "postgres://default".into(),
            }
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Relay {
        batch_size: u32,
        #[serde(with = "humantime_serde")]
        poll_interval: Duration,
    }

    impl Default for Relay {
        fn default() -> Self {
            Self {
                batch_size: 100,
                poll_interval: Duration::from_millis(500),
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let settings: Settings = load(None, &env(&[("PATH", "/bin")])).unwrap();
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn file_then_conventional_then_prefixed_variables_override() {
        let dir = std::env::temp_dir().join(format!("tributary-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("settings.toml");
        std::fs::write(
            &file,
            "[database]\nurl = \"postgres://file\"\n[relay]\nbatch_size = 7\npoll_interval = \"2s\"\n",
        )
        .unwrap();

        let from_file: Settings = load(Some(&file), &env(&[])).unwrap();
        assert_eq!(from_file.database.url, "postgres://file");
        assert_eq!(from_file.relay.poll_interval, Duration::from_secs(2));

        let conventional: Settings = load(
            Some(&file),
            &env(&[("DATABASE_URL", "postgres://conventional")]),
        )
        .unwrap();
        assert_eq!(conventional.database.url, "postgres://conventional");

        let prefixed: Settings = load(
            Some(&file),
            &env(&[
                ("DATABASE_URL", "postgres://conventional"),
                ("TRIBUTARY__DATABASE__URL", "postgres://prefixed"),
                ("TRIBUTARY__RELAY__BATCH_SIZE", "9"),
                ("TRIBUTARY__RELAY__POLL_INTERVAL", "100ms"),
            ]),
        )
        .unwrap();
        assert_eq!(prefixed.database.url, "postgres://prefixed");
        assert_eq!(prefixed.relay.batch_size, 9);
        assert_eq!(prefixed.relay.poll_interval, Duration::from_millis(100));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = load::<Settings>(None, &env(&[("TRIBUTARY__RELAY__BATCH_SIZ", "9")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("batch_siz"), "{error}");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let error = load::<Settings>(None, &env(&[("TRIBUTARY__RELAY__BATCH_SIZE", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("relay.batch_size"), "{error}");
        assert!(error.contains("TRIBUTARY__RELAY__BATCH_SIZE"), "{error}");

        let error = load::<Settings>(None, &env(&[("TRIBUTARY__RELAY__POLL_INTERVAL", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("relay.poll_interval"), "{error}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let error = load::<Settings>(Some(Path::new("/nonexistent/t.toml")), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/t.toml"), "{error}");
    }
}
