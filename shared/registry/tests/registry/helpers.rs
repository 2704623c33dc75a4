//! A registry per test: a scratch database, the router on `127.0.0.1:0`
//! guarded by two tokens (an administrator's and a reader's), and a small HTTP
//! helper that returns status, body and content type. Requests send the
//! administrator's bearer token unless a test says otherwise.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{extract::Request, middleware::Next, response::Response};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tributary_platform::{
    Secret,
    auth::{AuthSettings, Scope, TokenSettings},
    telemetry::{TelemetrySettings, init_logs},
};
use tributary_registry::RegistryClient;

/// The name and secret of a token with the `admin` scope.
pub(crate) const ADMIN: (&str, &str) = ("ops", "admin-secret-0123456789");
/// The name and secret of a token with the `query` scope only.
pub(crate) const READER: (&str, &str) = ("analyst", "reader-secret-0123456789");

/// The tokens the test registries accept: [`ADMIN`] and [`READER`].
pub(crate) fn auth() -> Arc<AuthSettings> {
    let token = |(name, secret): (&str, &str), scope| {
        let scopes = [scope].into_iter().collect();
        let secret = Secret::new(secret);
        (name.to_owned(), TokenSettings { secret, scopes })
    };
    Arc::new(AuthSettings {
        tokens: BTreeMap::from([token(ADMIN, Scope::Admin), token(READER, Scope::Query)]),
        disabled: false,
    })
}

/// How a test request authenticates.
#[derive(Debug, Clone, Copy)]
pub(crate) enum As<'a> {
    /// No `Authorization` header.
    Nobody,
    /// `Authorization: Bearer <secret>`.
    Bearer(&'a str),
    /// `Authorization: Basic base64(name:secret)`.
    Basic(&'a str, &'a str),
    /// This `Authorization` header, verbatim.
    Header(&'a str),
}

pub(crate) struct TestRegistry {
    pub(crate) url: String,
    #[allow(dead_code)]
    pub(crate) pool: PgPool,
    http: reqwest::Client,
    token: CancellationToken,
    schema_fetches: Arc<AtomicUsize>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A response: the HTTP status, the JSON body (`Null` when empty or not JSON)
/// and the content type.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) text: String,
    pub(crate) content_type: String,
    pub(crate) headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The Confluent `error_code`, if any.
    pub(crate) fn code(&self) -> Option<u64> {
        self.body["error_code"].as_u64()
    }

    /// The `id` of a registration, panicking with the response otherwise.
    pub(crate) fn id(&self) -> u64 {
        assert_eq!(self.status, 200, "expected success: {self:?}");
        self.body["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no id in {self:?}"))
    }

    pub(crate) fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

/// Starts a registry over a fresh database, accepting the tokens of [`auth`].
pub(crate) async fn spawn_registry() -> TestRegistry {
    spawn_registry_with(auth()).await
}

/// Starts a registry over a fresh database, accepting the tokens of `auth`.
pub(crate) async fn spawn_registry_with(auth: Arc<AuthSettings>) -> TestRegistry {
    let pool = scratch_pool().await;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a free port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    serve_on(listener, url, pool, auth)
}

pub(crate) async fn scratch_pool() -> PgPool {
    if std::env::var_os("TEST_LOG").is_some() {
        init_logs(&TelemetrySettings {
            log_level: "debug".into(),
            ..TelemetrySettings::default()
        });
    }
    let settings = tributary_platform::db::scratch::database()
        .await
        .expect("creating a scratch database (is PostgreSQL up at 127.0.0.1:5432?)");
    tributary_platform::db::connect(&settings, &[&tributary_registry::MIGRATOR])
        .await
        .expect("connecting and migrating")
}

/// Serves the registry over `pool` on `listener` with the tokens of [`auth`],
/// counting `GET /schemas/ids/..` requests.
pub(crate) fn spawn_on(listener: TcpListener, url: String, pool: PgPool) -> TestRegistry {
    serve_on(listener, url, pool, auth())
}

fn serve_on(
    listener: TcpListener,
    url: String,
    pool: PgPool,
    auth: Arc<AuthSettings>,
) -> TestRegistry {
    let schema_fetches = Arc::new(AtomicUsize::new(0));
    let counter = schema_fetches.clone();
    let router = tributary_registry::router(pool.clone(), auth).layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let counter = counter.clone();
            async move {
                if request.uri().path().starts_with("/schemas/ids/") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let response: Response = next.run(request).await;
                response
            }
        },
    ));
    let token = CancellationToken::new();
    tokio::spawn(tributary_platform::http::serve_on(
        listener,
        router,
        token.clone(),
    ));
    tributary_platform::tls::install_crypto_provider();
    TestRegistry {
        url,
        pool,
        http: reqwest::Client::new(),
        token,
        schema_fetches,
    }
}

/// A client of the registry at `url` sending the administrator's token.
pub(crate) fn admin_client(url: &str) -> RegistryClient {
    RegistryClient::new(url, Some(&Secret::new(ADMIN.1))).expect("valid URL")
}

/// An Avro record `name` in namespace `test` with `fields` (JSON array items).
pub(crate) fn record(name: &str, fields: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","namespace":"test","fields":[{fields}]}}"#)
}

impl TestRegistry {
    /// How many `GET /schemas/ids/..` requests the server has answered.
    pub(crate) fn schema_fetches(&self) -> usize {
        self.schema_fetches.load(Ordering::SeqCst)
    }

    /// A client of this registry sending the administrator's token.
    pub(crate) fn client(&self) -> RegistryClient {
        admin_client(&self.url)
    }

    /// A request with the administrator's bearer token.
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        self.request_as(As::Bearer(ADMIN.1), method, path, body)
            .await
    }

    /// A request authenticated `who`.
    pub(crate) async fn request_as(
        &self,
        who: As<'_>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        request = match who {
            As::Nobody => request,
            As::Bearer(secret) => request.bearer_auth(secret),
            As::Basic(name, secret) => request.basic_auth(name, Some(secret)),
            As::Header(value) => request.header("authorization", value),
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the registry answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            content_type,
            headers,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// `POST /subjects/{subject}/versions` with `schema`.
    pub(crate) async fn register(&self, subject: &str, schema: &str) -> Reply {
        self.post(
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": schema }),
        )
        .await
    }

    /// Sets the level of `subject`, or the global one for `None`.
    pub(crate) async fn set_level(&self, subject: Option<&str>, level: &str) {
        let path = subject.map_or_else(|| "/config".to_owned(), |s| format!("/config/{s}"));
        let reply = self.put(&path, json!({ "compatibility": level })).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}
