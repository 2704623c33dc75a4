//! HTTP conventions shared by every API: `application/problem+json` errors
//! naming the field at fault, a JSON body extractor that produces them, health
//! and metrics routes, and a server that stops on the shutdown token.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use anyhow::Context;
use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::sync::CancellationToken;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, stable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// The field at fault as a path into the request body (`lines[0].quantity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Further members specific to the kind of problem (boxed: most problems have none).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl Problem {
    /// A problem with `status`, a title and a detail.
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://tributary.dev/problems/{}", slug(title)),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            extensions: None,
        }
    }

    /// 400: a field of the request is invalid.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Invalid field", detail).with_field(field)
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds a member to the document.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions
            .get_or_insert_default()
            .insert(key.to_owned(), value.into());
        self
    }

    /// 404: the resource does not exist.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    /// 500: logs the error with its cause chain and answers without its details.
    pub fn internal(error: &anyhow::Error) -> Self {
        tracing::error!(error = format!("{error:#}"), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "the server could not complete the request",
        )
    }
}

fn slug(title: &str) -> String {
    title.to_ascii_lowercase().replace(' ', "-")
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("a problem serializes");
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<anyhow::Error> for Problem {
    fn from(error: anyhow::Error) -> Self {
        Problem::internal(&error)
    }
}

/// A JSON request body. Every way it can be wrong becomes a [`Problem`]: a
/// missing or wrong content type (415), a body over the route's limit (413),
/// malformed JSON (400), and missing, unknown or mistyped fields (400 naming
/// the field).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        status,
                        "Body too large",
                        "the request body is larger than this endpoint accepts",
                    )
                } else {
                    Problem::new(status, "Unreadable body", rejection.body_text())
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Deserializes JSON, turning errors into problems that name the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::new(StatusCode::BAD_REQUEST, "Malformed JSON", inner.to_string());
        }
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        let field = field_of(&path, &message);
        Problem::invalid_field(field, message)
    })
}

/// The path of the field at fault: serde_path_to_error gives the enclosing
/// object for missing and unknown fields; the name is in the message.
fn field_of(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (path, Some(name)) if !path.ends_with(name) => format!("{path}.{name}"),
        (".", None) => String::new(),
        (path, _) => path.to_owned(),
    }
}

/// Where a request sits in the caller's work: its own id, the correlation id
/// tying everything that follows from one outside request, and W3C trace context.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// `X-Request-Id` when it is a UUID, else a new UUIDv7.
    pub request_id: uuid::Uuid,
    /// `X-Correlation-Id` when it is a UUID, else the request id.
    pub correlation_id: uuid::Uuid,
    /// The caller's trace continued with a new span, or a new trace.
    pub traceparent: String,
}

impl RequestContext {
    /// Reads the context from request headers.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Self {
        let uuid = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| uuid::Uuid::parse_str(v).ok())
        };
        let request_id = uuid("x-request-id").unwrap_or_else(uuid::Uuid::now_v7);
        Self {
            request_id,
            correlation_id: uuid("x-correlation-id").unwrap_or(request_id),
            traceparent: traceparent(headers.get("traceparent").and_then(|v| v.to_str().ok())),
        }
    }
}

/// The W3C trace context for what a request causes: the caller's trace with
/// a new span of ours, or a new trace when the caller sent none (or a
/// malformed one). `00-<trace id>-<span id>-<flags>`.
pub fn traceparent(incoming: Option<&str>) -> String {
    let span_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let parsed = incoming.and_then(|value| {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = version == "00"
            && parts.next().is_none()
            && hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex(parent, 16)
            && hex(flags, 2);
        valid.then(|| (trace_id.to_owned(), flags.to_owned()))
    });
    let (trace_id, flags) =
        parsed.unwrap_or_else(|| (uuid::Uuid::new_v4().simple().to_string(), "01".to_owned()));
    format!("00-{trace_id}-{span_id}-{flags}")
}

/// A readiness check: `Ok` when the role can do its work.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

/// Ready when PostgreSQL answers `SELECT 1` on `pool`.
pub fn postgres_ready(pool: sqlx::PgPool) -> ReadinessCheck {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query_scalar!(r#"SELECT 1 AS "one!""#)
                .fetch_one(&pool)
                .await
                .context("PostgreSQL does not answer")?;
            Ok(())
        })
    })
}

/// `/health/live`, `/health/ready` (runs `ready`) and `/metrics` (Prometheus text).
pub fn operations_routes(ready: ReadinessCheck) -> Router {
    Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route(
            "/health/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => "ready".into_response(),
                        Err(error) => Problem::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Not ready",
                            format!("{error:#}"),
                        )
                        .into_response(),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async { crate::telemetry::render_metrics() }),
        )
}

/// Binds `addr`, serving `router` until `token` is cancelled (in-flight requests finish).
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    serve_on(listener, router, token).await
}

/// Like [`serve`], on a listener already bound (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
        .context("serving HTTP")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        customer_id: String,
        lines: Vec<Line>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        quantity: i32,
    }

    fn problem(json: &str) -> Problem {
        parse_json::<Order>(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn names_the_field_that_is_missing_unknown_or_mistyped() {
        assert_eq!(
            problem(r#"{"lines": []}"#).field.as_deref(),
            Some("customer_id")
        );
        let unknown = problem(r#"{"customer_id": "c", "lines": [], "coupon": 1}"#);
        assert_eq!(unknown.field.as_deref(), Some("coupon"));
        let nested = problem(r#"{"customer_id": "c", "lines": [{"sku": "A", "quantity": "two"}]}"#);
        assert_eq!(nested.field.as_deref(), Some("lines[0].quantity"));
        let missing_nested = problem(r#"{"customer_id": "c", "lines": [{"sku": "A"}]}"#);
        assert_eq!(missing_nested.field.as_deref(), Some("lines[0].quantity"));
    }

    #[test]
    fn continues_the_callers_trace_with_a_span_of_its_own() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ours = traceparent(Some(incoming));
        assert!(
            ours.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{ours}"
        );
        assert!(ours.ends_with("-01"));
        assert_ne!(ours, incoming);
    }

    #[test]
    fn starts_a_trace_when_there_is_none_or_it_is_malformed() {
        for incoming in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            let ours = traceparent(incoming);
            let parts: Vec<&str> = ours.split('-').collect();
            assert_eq!(parts.len(), 4, "{ours}");
            assert_eq!(
                (parts[0], parts[1].len(), parts[2].len(), parts[3]),
                ("00", 32, 16, "01")
            );
        }
    }

    #[test]
    fn malformed_json_is_its_own_problem() {
        let problem = problem(r#"{"customer_id": "#);
        assert_eq!(problem.title, "Malformed JSON");
        assert_eq!(problem.status, 400);
    }
}
