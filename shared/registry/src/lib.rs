//! Tributary's schema registry: a Confluent-compatible REST subset backed by
//! PostgreSQL, and the client every role uses to register the Avro contract and
//! to find writer schemas by id.
//!
//! The server ([`server`]) keeps every schema once under a global id, the
//! versions of each subject, and compatibility levels (global default
//! `BACKWARD_TRANSITIVE`); it refuses a new version that its subject's level
//! does not allow. Confluent clients (confluent-kafka, the Java serializers)
//! talk to it unchanged. Only Avro is supported, without schema references.
//! Every route but health and metrics needs a token: any valid one to read,
//! one with the `admin` scope to register or change compatibility levels;
//! Confluent clients may send it as Basic credentials (name and secret).
//!
//! The client ([`client::RegistryClient`], built by
//! [`RegistrySettings::client`]) sends `registry.token` as its bearer token,
//! registers and fetches schemas, and caches writer schemas by id forever
//! (ids are immutable). reqwest is built
//! with `rustls-no-provider`: [`client::RegistryClient::new`] installs the
//! platform's rustls provider (`ring`) for the process if none is installed,
//! since reqwest refuses to build a client without one. The tests use plain
//! `http://` only; `https://` has not been exercised here.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use std::{collections::BTreeMap, sync::Arc, time::Duration};
//! use tributary_platform::{
//!     Secret,
//!     auth::{AuthSettings, Scope, TokenSettings},
//!     db::DatabaseSettings,
//! };
//! use tributary_registry::{MIGRATOR, RegistrySettings};
//!
//! // The server: migrate, then serve until the token is cancelled. Reads
//! // need any valid token, registering the `admin` scope.
//! let secret = Secret::new(std::env::var("REGISTRY_ADMIN_TOKEN")?);
//! let admin = TokenSettings { secret: secret.clone(), scopes: [Scope::Admin].into_iter().collect() };
//! let auth = Arc::new(AuthSettings { tokens: BTreeMap::from([("ops".into(), admin)]), disabled: false });
//! let settings = RegistrySettings { token: Some(secret), ..RegistrySettings::default() };
//! let pool = tributary_platform::db::connect(&DatabaseSettings::default(), &[&MIGRATOR]).await?;
//! let token = tokio_util::sync::CancellationToken::new();
//! let (serving, stop) = (settings.clone(), token.clone());
//! tokio::spawn(async move { tributary_registry::serve(&serving, pool, auth, stop).await });
//!
//! // A role: register the contract (waiting for the registry to come up),
//! // then resolve the schema ids found in message headers.
//! let registry = settings.client()?;
//! let ids = registry.register_contract("", Duration::from_secs(30)).await?;
//! let id = ids.id_of("shop.orders.OrderPlaced").expect("in the contract");
//! let writer = registry.schema_by_id(id).await?;
//! assert_eq!(writer.full_name, "shop.orders.OrderPlaced");
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use tributary_platform::Secret;

pub mod client;
pub mod compatibility;
pub mod server;
mod store;

pub use client::{ContractIds, RegistryClient, WriterSchema};
pub use server::{router, serve};

/// The registry's PostgreSQL migrations (versions 1000–1999).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Settings of the schema registry, both for serving it and for reaching it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Address the registry server listens on.
    pub listen: SocketAddr,
    /// Base URL at which clients reach the registry, e.g. `http://registry:8081`.
    pub url: String,
    /// The bearer token every role sends to the registry: a secret from
    /// `auth.tokens` (set `TRIBUTARY__REGISTRY__TOKEN`). Reads need any valid
    /// token; registering the contract at start-up needs the `admin` scope.
    /// Prints as `***`.
    pub token: Option<Secret>,
}

impl RegistrySettings {
    /// A client of the registry at `url`, sending `token`.
    pub fn client(&self) -> Result<RegistryClient> {
        RegistryClient::new(&self.url, self.token.as_ref())
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8081)),
            url: "http://127.0.0.1:8081".to_owned(),
            token: None,
        }
    }
}

/// Errors of the registry client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not be reached (connection refused, timeout, DNS):
    /// worth retrying.
    #[error("schema registry at {url} is unreachable")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error (Confluent `error_code` and message).
    #[error("schema registry refused the request (HTTP {status}, error code {code}): {message}")]
    Registry {
        /// The HTTP status.
        status: u16,
        /// The Confluent error code, e.g. 40401 (subject not found), 409 (incompatible).
        code: u32,
        /// The registry's explanation.
        message: String,
    },
    /// The registry's answer was not what the protocol promises.
    #[error("unexpected response from the schema registry at {url}: {detail}")]
    Protocol {
        /// The URL requested.
        url: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A schema fetched from the registry does not parse as Avro.
    #[error("schema {id} from the registry is not valid Avro")]
    InvalidSchema {
        /// The schema id.
        id: u32,
        /// The parser's error.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// The registry base URL is not an absolute `http(s)://` URL.
    #[error("invalid schema registry URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// `registry.token` cannot be sent in an HTTP header (it holds a control
    /// character such as a newline).
    #[error("registry.token cannot be sent as an HTTP header: it holds a control character")]
    InvalidToken,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl Error {
    /// Whether the registry could not be reached, rather than refusing the request.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }

    /// Whether a retry may succeed: unreachable, or a server-side (5xx) failure.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Registry { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status when the registry refused the request: 401 without a
    /// valid token, 403 when the token lacks the scope.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Registry { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Confluent error code when the registry refused the request.
    pub fn registry_code(&self) -> Option<u32> {
        match self {
            Error::Registry { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
