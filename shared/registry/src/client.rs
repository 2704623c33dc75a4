//! The registry client every role uses: registers the contract at start-up
//! and finds writer schemas by the id in each message's Confluent header.
//!
//! Writer schemas are cached forever (a registry id never changes meaning),
//! and concurrent requests for one id share one fetch.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use apache_avro::Schema;
use reqwest::{
    Method, Url,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::json;
use tokio::{sync::OnceCell, time::Instant};
use tracing::instrument;
use tributary_platform::Secret;
use tributary_schemas::{CONTRACT, subject};

use crate::{Error, Result};

/// The registry's media type, sent and accepted.
const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// How long to wait for a TCP connection to the registry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause between attempts while the registry is unreachable.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A client of the schema registry. Cheap to clone: clones share the
/// connection pool and the schema cache.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    /// One cell per id asked for; a cell is filled once, by the first fetch that succeeds.
    schemas: Mutex<HashMap<u32, Arc<OnceCell<Arc<WriterSchema>>>>>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.inner.base.as_str())
            .field("cached_ids", &self.cells().len())
            .finish()
    }
}

/// A writer schema found by its registry id.
#[derive(Debug, Clone)]
pub struct WriterSchema {
    /// The registry id.
    pub id: u32,
    /// The parsed schema.
    pub schema: Schema,
    /// The full name of the schema's record (`shop.orders.OrderPlaced`); for
    /// an unnamed schema (e.g. `"string"`), its Parsing Canonical Form.
    pub full_name: String,
}

impl WriterSchema {
    fn new(id: u32, schema: Schema) -> Self {
        let full_name = match schema.name() {
            Some(name) => name.fullname(None),
            None => schema.canonical_form(),
        };
        Self {
            id,
            schema,
            full_name,
        }
    }
}

/// The registry ids of the contract's current record versions.
#[derive(Debug, Clone, Default)]
pub struct ContractIds {
    by_name: HashMap<&'static str, u32>,
    by_id: HashMap<u32, &'static str>,
}

impl ContractIds {
    /// The id of the current version of the record `full_name`.
    pub fn id_of(&self, full_name: &str) -> Option<u32> {
        self.by_name.get(full_name).copied()
    }

    /// The record whose current version has registry id `id`.
    pub fn full_name_of(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).copied()
    }

    /// Every `(full name, id)` pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.by_name.iter().map(|(name, id)| (*name, *id))
    }

    fn insert(&mut self, full_name: &'static str, id: u32) {
        self.by_name.insert(full_name, id);
        self.by_id.insert(id, full_name);
    }
}

/// A registry error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

/// A problem document: how the registry refuses a request for want of a
/// token (401) or of the scope (403).
#[derive(Debug, Deserialize)]
struct ProblemBody {
    detail: String,
}

impl RegistryClient {
    /// A client of the registry at `base_url` (`http://host:port`, optionally
    /// with a path prefix), sending `token` as its bearer token (reads need
    /// any valid token, registering the `admin` scope). Only checks the URL
    /// and the token: nothing is contacted yet.
    pub fn new(base_url: &str, token: Option<&Secret>) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(base_url).map_err(|error| invalid(&error.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the URL must not have a query or fragment"));
        }
        base.path_segments_mut()
            .map_err(|()| invalid("the URL cannot be a base"))?
            .pop_if_empty();
        // reqwest is built without a crypto provider and panics without one,
        // even for plain http: use the platform's (ring), once per process.
        tributary_platform::tls::install_crypto_provider();
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            let mut bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| Error::InvalidToken)?;
            // Kept out of reqwest's Debug output.
            bearer.set_sensitive(true);
            headers.insert(AUTHORIZATION, bearer);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("tributary-registry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                schemas: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Registers (idempotent) and returns the schema id.
    #[instrument(skip(self, schema), err)]
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        let url = self.endpoint(&["subjects", subject, "versions"])?;
        let body = json!({ "schema": schema, "schemaType": "AVRO" });
        let Registered { id } = self.send(Method::POST, url, Some(&body)).await?;
        // The server accepted it, so it parses; keep it, saving a fetch by id.
        if let Ok(parsed) = Schema::parse_str(schema) {
            let cell = self.cell(id);
            let _ = cell.set(Arc::new(WriterSchema::new(id, parsed)));
        }
        Ok(id)
    }

    /// The writer schema for an id, fetched once then cached forever (ids are immutable).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<WriterSchema>> {
        self.cell(id)
            .get_or_try_init(|| self.fetch(id))
            .await
            .cloned()
    }

    /// The schema registered as `version` of `subject` (the latest when `None`).
    #[instrument(skip(self), err)]
    pub async fn subject_version(
        &self,
        subject: &str,
        version: Option<u32>,
    ) -> Result<Arc<WriterSchema>> {
        #[derive(Deserialize)]
        struct Version {
            id: u32,
        }
        let version = version.map_or_else(|| "latest".to_owned(), |v| v.to_string());
        let url = self.endpoint(&["subjects", subject, "versions", &version])?;
        let Version { id } = self.send(Method::GET, url, None).await?;
        self.schema_by_id(id).await
    }

    /// The subjects (and versions) under which schema `id` is registered.
    #[instrument(skip(self), err)]
    pub async fn subjects_of(&self, id: u32) -> Result<Vec<(String, u32)>> {
        #[derive(Deserialize)]
        struct Usage {
            subject: String,
            version: u32,
        }
        let url = self.endpoint(&["schemas", "ids", &id.to_string(), "versions"])?;
        let usages: Vec<Usage> = self.send(Method::GET, url, None).await?;
        Ok(usages.into_iter().map(|u| (u.subject, u.version)).collect())
    }

    /// Registers the current version of every record in
    /// [`tributary_schemas::CONTRACT`] under `subject(<topic_prefix><topic
    /// name>, full_name)`, retrying with backoff for up to `wait` while the
    /// registry is unreachable (roles may start before it). Returns the ids.
    /// A refusal (e.g. an incompatible schema) fails at once.
    #[instrument(skip(self), err)]
    pub async fn register_contract(
        &self,
        topic_prefix: &str,
        wait: Duration,
    ) -> Result<ContractIds> {
        let deadline = Instant::now() + wait;
        let mut ids = ContractIds::default();
        for history in CONTRACT.iter().map(|history| history()) {
            let topic = format!("{topic_prefix}{}", history.topic.name());
            let subject = subject(&topic, history.full_name);
            let id = retry_until(deadline, || self.register(&subject, history.current())).await?;
            ids.insert(history.full_name, id);
        }
        tracing::info!(records = ids.by_name.len(), "registered the contract");
        Ok(ids)
    }

    #[instrument(skip(self), err)]
    async fn fetch(&self, id: u32) -> Result<Arc<WriterSchema>> {
        #[derive(Deserialize)]
        struct ById {
            schema: String,
            #[serde(rename = "schemaType")]
            schema_type: Option<String>,
        }
        let url = self.endpoint(&["schemas", "ids", &id.to_string()])?;
        let ById {
            schema,
            schema_type,
        } = self.send(Method::GET, url.clone(), None).await?;
        if let Some(kind) = schema_type.filter(|kind| !kind.eq_ignore_ascii_case("AVRO")) {
            return Err(Error::Protocol {
                url: url.into(),
                detail: format!("schema {id} is {kind}, not Avro"),
            });
        }
        let schema = Schema::parse_str(&schema).map_err(|source| Error::InvalidSchema {
            id,
            source: Box::new(source),
        })?;
        Ok(Arc::new(WriterSchema::new(id, schema)))
    }

    fn cells(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<OnceCell<Arc<WriterSchema>>>>> {
        // The map is never left half-updated, so a poisoned lock is still usable.
        self.inner
            .schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn cell(&self, id: u32) -> Arc<OnceCell<Arc<WriterSchema>>> {
        self.cells().entry(id).or_default().clone()
    }

    /// The base URL with `segments` appended, each percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::InvalidUrl {
                url: self.inner.base.to_string(),
                reason: "the URL cannot be a base".to_owned(),
            })?
            .extend(segments);
        Ok(url)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let mut request = self
            .inner
            .http
            .request(method, url.clone())
            .header(ACCEPT, format!("{MEDIA_TYPE}, application/json"));
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, MEDIA_TYPE)
                .body(body.to_string());
        }
        let unreachable = |source| Error::Unreachable {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|error| Error::Protocol {
                url: url.to_string(),
                detail: format!("HTTP {status} with a body that is not the expected JSON: {error}"),
            });
        }
        let status = status.as_u16();
        if let Ok(ErrorBody {
            error_code,
            message,
        }) = serde_json::from_slice(&bytes)
        {
            return Err(Error::Registry {
                status,
                code: error_code,
                message,
            });
        }
        let message = match serde_json::from_slice::<ProblemBody>(&bytes) {
            Ok(ProblemBody { detail }) => detail,
            // Not the registry speaking (a proxy, a load balancer): keep the start of what it said.
            Err(_) => String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        };
        Err(Error::Registry {
            status,
            code: u32::from(status),
            message,
        })
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `deadline` passes
/// while it keeps failing transiently; pauses double from 100 ms up to 2 s.
async fn retry_until<T, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut pause = FIRST_BACKOFF;
    loop {
        match attempt().await {
            Err(error) if error.is_transient() => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(error);
                }
                let pause_now = pause.min(deadline - now);
                tracing::warn!(error = %chain(&error), retry_in = ?pause_now, "schema registry not available yet");
                tokio::time::sleep(pause_now).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
            outcome => return outcome,
        }
    }
}

/// An error with its causes, `outer: inner: ...`.
fn chain(error: &dyn std::error::Error) -> String {
    std::iter::successors(Some(error), |error| error.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_urls_that_are_not_http() {
        assert!(RegistryClient::new("http://127.0.0.1:8081", None).is_ok());
        for invalid in [
            "127.0.0.1:8081",
            "ftp://host",
            "not a url",
            "http://host/?a=b",
        ] {
            assert!(
                matches!(
                    RegistryClient::new(invalid, None),
                    Err(Error::InvalidUrl { .. })
                ),
                "{invalid}"
            );
        }
    }

    #[test]
    fn builds_endpoints_with_percent_encoded_segments_under_a_prefix() {
        let client = RegistryClient::new("http://host:8081/registry/", None).expect("valid URL");
        let url = client
            .endpoint(&["subjects", "a/b c", "versions"])
            .expect("a base URL");
        assert_eq!(
            url.as_str(),
            "http://host:8081/registry/subjects/a%2Fb%20c/versions"
        );
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_told_apart_from_a_refusal() {
        // A port that was just free: connecting to it is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = listener.local_addr().expect("bound");
        drop(listener);
        let client = RegistryClient::new(&format!("http://{addr}"), None).expect("valid URL");
        let error = client.schema_by_id(1).await.expect_err("nothing listens");
        assert!(error.is_unreachable(), "{error:?}");
        assert!(error.is_transient());
    }
}
