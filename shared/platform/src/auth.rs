//! Bearer tokens with scopes for every HTTP surface.
//!
//! Tokens are configured by name (`[auth.tokens.storefront]`, or
//! `TRIBUTARY__AUTH__TOKENS__STOREFRONT__SECRET` and `…__SCOPES=commands,query`).
//! A request without a valid token gets 401, one whose token lacks the
//! route's scope 403. Secrets compare in constant time and never reach a log:
//! requests are logged with the token's name.
//!
//! A surface that Confluent-style clients call (the schema registry) also
//! accepts HTTP Basic credentials, `Authorization: Basic base64(name:secret)`
//! with the token's name and secret: those clients send Basic auth
//! (`basic.auth.user.info`), not bearer tokens.

use std::{collections::BTreeMap, fmt, str::FromStr, sync::Arc};

use anyhow::bail;
use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

use crate::{Secret, http::Problem};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Send commands to the command API.
    Commands,
    /// Publish upstream events through the ingest endpoint.
    Ingest,
    /// Read the read models through the query API.
    Query,
    /// Operate: the registry's writes, dead letters, rebuilds.
    Admin,
}

impl Scope {
    /// The scope's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Commands => "commands",
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value.trim() {
            "commands" => Scope::Commands,
            "ingest" => Scope::Ingest,
            "query" => Scope::Query,
            "admin" => Scope::Admin,
            other => {
                return Err(format!(
                    "unknown scope {other:?}: expected commands, ingest, query or admin"
                ));
            }
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token's scopes: a list, or one comma-separated string (for environment variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Whether `scope` is among them.
    pub fn allow(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let names = match Raw::deserialize(deserializer)? {
            Raw::One(joined) => joined.split(',').map(str::to_owned).collect(),
            Raw::Many(names) => names,
        };
        names
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|s| s.as_str()))
    }
}

/// One client's token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// The bearer token, at least 16 characters. Prints as `***`.
    pub secret: Secret,
    /// What it may do: `commands`, `ingest`, `query`, `admin`.
    pub scopes: Scopes,
}

/// Who may call the HTTP surfaces.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Tokens by client name; the name is what logs show.
    pub tokens: BTreeMap<String, TokenSettings>,
    /// Serve without authentication. For local development only.
    pub disabled: bool,
}

impl AuthSettings {
    /// Shortest secret accepted.
    pub const MIN_SECRET_LEN: usize = 16;

    /// Refuses settings an HTTP role cannot run safely with.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.disabled {
            return Ok(());
        }
        if self.tokens.is_empty() {
            bail!(
                "auth.tokens is empty: configure a token per client (TRIBUTARY__AUTH__TOKENS__<NAME>__SECRET \
                 and __SCOPES), or set auth.disabled = true for local development"
            );
        }
        for (name, token) in &self.tokens {
            if token.secret.expose().len() < Self::MIN_SECRET_LEN {
                bail!(
                    "auth.tokens.{name}.secret is shorter than {} characters",
                    Self::MIN_SECRET_LEN
                );
            }
        }
        Ok(())
    }

    /// The name and scopes of the token `presented`, comparing every secret
    /// in constant time.
    fn find(&self, presented: &[u8]) -> Option<(&str, &Scopes)> {
        let mut found = None;
        for (name, token) in &self.tokens {
            if bool::from(token.secret.expose().as_bytes().ct_eq(presented)) {
                found = Some((name.as_str(), &token.scopes));
            }
        }
        found
    }

    /// The token called `name` when `secret` is its secret. Every token's name
    /// and secret are compared, each in constant time, so the time taken
    /// tells neither whether the name exists nor how much of the secret matched.
    fn find_named(&self, name: &[u8], secret: &[u8]) -> Option<(&str, &Scopes)> {
        let mut found = None;
        for (token_name, token) in &self.tokens {
            let same_name = token_name.as_bytes().ct_eq(name);
            let same_secret = token.secret.expose().as_bytes().ct_eq(secret);
            if bool::from(same_name & same_secret) {
                found = Some((token_name.as_str(), &token.scopes));
            }
        }
        found
    }

    /// The token whose credentials these are.
    fn authenticate(&self, credentials: &Credentials) -> Option<(&str, &Scopes)> {
        match credentials {
            Credentials::Bearer(token) => self.find(token.as_bytes()),
            Credentials::Basic { name, secret } => self.find_named(name, secret),
        }
    }
}

/// What a request presented in its `Authorization` header.
enum Credentials<'a> {
    /// `Bearer <secret>`.
    Bearer(&'a str),
    /// `Basic base64(name:secret)`, decoded.
    Basic { name: Vec<u8>, secret: Vec<u8> },
}

/// Why a request's credentials were not even looked at.
#[derive(Debug, PartialEq, Eq)]
enum Unreadable {
    /// No `Authorization` header, or a scheme this guard does not accept.
    Missing,
    /// `Basic` whose parameter is not base64 of `name:secret`.
    MalformedBasic,
}

/// Reads the `Authorization` header; the scheme is case-insensitive (RFC 9110).
/// `Basic` counts only when `basic` is accepted.
fn credentials(value: Option<&HeaderValue>, basic: bool) -> Result<Credentials<'_>, Unreadable> {
    let value = value
        .and_then(|v| v.to_str().ok())
        .ok_or(Unreadable::Missing)?;
    let (scheme, parameter) = value.trim().split_once(' ').ok_or(Unreadable::Missing)?;
    let parameter = parameter.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(parameter));
    }
    if !(basic && scheme.eq_ignore_ascii_case("basic")) {
        return Err(Unreadable::Missing);
    }
    let decoded = BASE64
        .decode(parameter)
        .map_err(|_| Unreadable::MalformedBasic)?;
    let colon = decoded
        .iter()
        .position(|b| *b == b':')
        .ok_or(Unreadable::MalformedBasic)?;
    Ok(Credentials::Basic {
        name: decoded[..colon].to_vec(),
        secret: decoded[colon + 1..].to_vec(),
    })
}

/// What a guard asks of a request's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// A token with this scope.
    Scope(Scope),
    /// Any valid token, whatever its scopes.
    AnyToken,
}

/// The guard of a router: `route_layer(from_fn_with_state(Guard::new(auth, scope), require))`.
#[derive(Debug, Clone)]
pub struct Guard {
    auth: Arc<AuthSettings>,
    needs: Needs,
    basic: bool,
}

impl Guard {
    /// Requests must carry a token with `scope`.
    pub fn new(auth: Arc<AuthSettings>, scope: Scope) -> Self {
        Self {
            auth,
            needs: Needs::Scope(scope),
            basic: false,
        }
    }

    /// Requests must carry a valid token, of any scope (reads every client may make).
    pub fn any_token(auth: Arc<AuthSettings>) -> Self {
        Self {
            auth,
            needs: Needs::AnyToken,
            basic: false,
        }
    }

    /// Also accepts `Authorization: Basic base64(name:secret)`, `name` being
    /// the token's name in `auth.tokens` and `secret` its secret: what
    /// Confluent clients send (`basic.auth.user.info = "name:secret"`).
    pub fn accepting_basic(mut self) -> Self {
        self.basic = true;
        self
    }

    /// The `WWW-Authenticate` challenge of a 401.
    fn challenge(&self) -> HeaderValue {
        HeaderValue::from_static(if self.basic {
            "Bearer, Basic realm=\"tributary\""
        } else {
            "Bearer"
        })
    }
}

/// Middleware: 401 without a valid token, 403 without the scope.
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if guard.auth.disabled {
        return next.run(request).await;
    }
    let presented = credentials(request.headers().get(header::AUTHORIZATION), guard.basic);
    let credentials = match presented {
        Ok(credentials) => credentials,
        Err(Unreadable::Missing) if guard.basic => {
            return unauthorized(
                &guard,
                "this endpoint needs an `Authorization: Bearer <token>` header, \
                 or `Authorization: Basic` with the token's name and secret",
            );
        }
        Err(Unreadable::Missing) => {
            return unauthorized(
                &guard,
                "this endpoint needs an `Authorization: Bearer <token>` header",
            );
        }
        Err(Unreadable::MalformedBasic) => {
            return unauthorized(
                &guard,
                "the Basic credentials are not base64 of `name:secret`",
            );
        }
    };
    match guard.auth.authenticate(&credentials) {
        None if matches!(credentials, Credentials::Basic { .. }) => {
            unauthorized(&guard, "the token name or secret is not valid")
        }
        None => unauthorized(&guard, "the bearer token is not valid"),
        Some((client, scopes)) => match guard.needs {
            Needs::Scope(scope) if !scopes.allow(scope) => {
                tracing::info!(client, %scope, "refused: token lacks the scope");
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!("the token of {client} does not have the `{scope}` scope"),
                )
                .into_response()
            }
            Needs::Scope(_) | Needs::AnyToken => {
                tracing::debug!(client, "authenticated");
                next.run(request).await
            }
        },
    }
}

fn unauthorized(guard: &Guard, detail: &str) -> Response {
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, guard.challenge());
    response
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        auth: AuthSettings,
    }

    #[test]
    fn tokens_and_scopes_load_from_the_environment() {
        let env: HashMap<String, String> = [
            (
                "TRIBUTARY__AUTH__TOKENS__STOREFRONT__SECRET",
                "0123456789abcdef0123",
            ),
            (
                "TRIBUTARY__AUTH__TOKENS__STOREFRONT__SCOPES",
                "commands, query",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let settings: Settings = crate::config::load(None, &env).unwrap();
        settings.auth.validate().unwrap();
        let (name, scopes) = settings.auth.find(b"0123456789abcdef0123").unwrap();
        assert_eq!(name, "storefront");
        assert!(
            scopes.allow(Scope::Commands)
                && scopes.allow(Scope::Query)
                && !scopes.allow(Scope::Admin)
        );
        assert!(settings.auth.find(b"0123456789abcdef012").is_none());
    }

    #[test]
    fn refuses_no_tokens_short_secrets_and_unknown_scopes() {
        assert!(AuthSettings::default().validate().is_err());
        assert!(
            AuthSettings {
                disabled: true,
                ..Default::default()
            }
            .validate()
            .is_ok()
        );
        let short = AuthSettings {
            tokens: BTreeMap::from([(
                "x".to_owned(),
                TokenSettings {
                    secret: Secret::new("short"),
                    scopes: Scopes::default(),
                },
            )]),
            disabled: false,
        };
        assert!(
            short
                .validate()
                .unwrap_err()
                .to_string()
                .contains("auth.tokens.x.secret")
        );
        assert!(serde_json::from_str::<Scopes>("\"commands,root\"").is_err());
    }

    const OPS: &str = "ops-secret-0123456789";
    const ANALYST: &str = "analyst-secret-0123456789";

    /// `ops` with the `admin` scope, `analyst` with `query`.
    fn two_tokens() -> Arc<AuthSettings> {
        let token = |secret, scope| TokenSettings {
            secret: Secret::new(secret),
            scopes: [scope].into_iter().collect(),
        };
        Arc::new(AuthSettings {
            tokens: BTreeMap::from([
                ("ops".to_owned(), token(OPS, Scope::Admin)),
                ("analyst".to_owned(), token(ANALYST, Scope::Query)),
            ]),
            disabled: false,
        })
    }

    fn basic(name: &str, secret: &str) -> String {
        format!("Basic {}", BASE64.encode(format!("{name}:{secret}")))
    }

    /// A login read from a header: `(name, secret)` for Basic, `None` for a bearer token.
    type Login = Option<(Vec<u8>, Vec<u8>)>;

    fn read(header: Option<&str>, basic: bool) -> Result<Login, Unreadable> {
        let value = header.map(|h| HeaderValue::from_str(h).expect("a header value"));
        credentials(value.as_ref(), basic).map(|credentials| match credentials {
            Credentials::Bearer(_) => None,
            Credentials::Basic { name, secret } => Some((name, secret)),
        })
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon_when_the_guard_accepts_them() {
        let header = basic("ops", "a:b");
        assert_eq!(
            read(Some(&header), true),
            Ok(Some((b"ops".to_vec(), b"a:b".to_vec())))
        );
        let lowercase = header.replacen("Basic", "basic", 1);
        assert!(matches!(read(Some(&lowercase), true), Ok(Some(_))));
        assert_eq!(read(Some(&header), false), Err(Unreadable::Missing));
        assert_eq!(
            read(Some("Basic not base64!"), true),
            Err(Unreadable::MalformedBasic)
        );
        let no_colon = format!("Basic {}", BASE64.encode("ops"));
        assert_eq!(read(Some(&no_colon), true), Err(Unreadable::MalformedBasic));
        assert_eq!(read(Some("BEARER x"), true), Ok(None));
        assert_eq!(read(Some("Token x"), true), Err(Unreadable::Missing));
        assert_eq!(read(None, true), Err(Unreadable::Missing));
    }

    #[test]
    fn a_basic_login_needs_a_tokens_own_name_and_its_secret() {
        let auth = two_tokens();
        let (name, scopes) = auth.find_named(b"ops", OPS.as_bytes()).expect("ops");
        assert_eq!(name, "ops");
        assert!(scopes.allow(Scope::Admin));
        for (name, secret) in [
            ("ops", ANALYST),
            ("analyst", OPS),
            ("nobody", OPS),
            ("ops", "ops-secret-012345678"),
            (OPS, ""),
        ] {
            assert!(
                auth.find_named(name.as_bytes(), secret.as_bytes())
                    .is_none(),
                "{name}"
            );
        }
    }

    /// `/admin` needs `admin`, `/read` any token, both accepting Basic;
    /// `/bearer` needs `admin` as a bearer token.
    fn guarded(auth: Arc<AuthSettings>) -> axum::Router {
        use axum::{middleware::from_fn_with_state, routing::get};
        let layer = |guard| from_fn_with_state(guard, require);
        axum::Router::new()
            .route(
                "/admin",
                get(|| async { "ok" }).route_layer(layer(
                    Guard::new(auth.clone(), Scope::Admin).accepting_basic(),
                )),
            )
            .route(
                "/read",
                get(|| async { "ok" })
                    .route_layer(layer(Guard::any_token(auth.clone()).accepting_basic())),
            )
            .route(
                "/bearer",
                get(|| async { "ok" }).route_layer(layer(Guard::new(auth, Scope::Admin))),
            )
    }

    async fn call(router: &axum::Router, path: &str, authorization: Option<&str>) -> Response {
        use tower::ServiceExt;
        let mut request = axum::http::Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request.body(axum::body::Body::empty()).expect("a request");
        router.clone().oneshot(request).await.expect("infallible")
    }

    /// Tracing caches whether a callsite is enabled across threads: a test
    /// running the guard without a subscriber, at the same time as the one
    /// that captures the guard's logs, can leave its callsites disabled for
    /// it. The two take turns.
    static GUARD_CALLSITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn guards_let_through_refuse_or_challenge_by_credentials_and_scope() {
        let _serial = GUARD_CALLSITES.lock().await;
        let router = guarded(two_tokens());
        let bearer = |secret: &str| format!("Bearer {secret}");
        let cases = [
            ("/admin", None, 401),
            ("/admin", Some(bearer(OPS)), 200),
            ("/admin", Some(basic("ops", OPS)), 200),
            ("/admin", Some(bearer(ANALYST)), 403),
            ("/admin", Some(basic("analyst", ANALYST)), 403),
            ("/admin", Some(basic("ops", ANALYST)), 401),
            ("/admin", Some(basic("nobody", OPS)), 401),
            ("/admin", Some("Basic not base64!".to_owned()), 401),
            ("/read", Some(bearer(ANALYST)), 200),
            ("/read", Some(basic("analyst", ANALYST)), 200),
            ("/read", Some(bearer("not-a-token-of-ours")), 401),
            ("/bearer", Some(bearer(OPS)), 200),
            ("/bearer", Some(basic("ops", OPS)), 401),
        ];
        for (path, authorization, status) in cases {
            let response = call(&router, path, authorization.as_deref()).await;
            assert_eq!(
                response.status().as_u16(),
                status,
                "{path} {authorization:?}"
            );
        }
        let challenge = |path| {
            let router = router.clone();
            async move { call(&router, path, None).await.headers()[header::WWW_AUTHENTICATE].clone() }
        };
        assert_eq!(
            challenge("/admin").await,
            "Bearer, Basic realm=\"tributary\""
        );
        assert_eq!(challenge("/bearer").await, "Bearer");

        let disabled = guarded(Arc::new(AuthSettings {
            disabled: true,
            ..AuthSettings::default()
        }));
        assert_eq!(
            call(&disabled, "/admin", None).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn secrets_presented_in_either_scheme_never_reach_the_logs() {
        use std::sync::Mutex;
        let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let logs = logs.clone();
            move || Captured(logs.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let _serial = GUARD_CALLSITES.lock().await;
        let _logging = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();

        let router = guarded(two_tokens());
        let wrong = "wrong-secret-0123456789";
        for authorization in [
            format!("Bearer {OPS}"),
            format!("Bearer {ANALYST}"),
            format!("Bearer {wrong}"),
            basic("ops", OPS),
            basic("analyst", ANALYST),
            basic("ops", wrong),
        ] {
            call(&router, "/admin", Some(&authorization)).await;
        }
        let logs = String::from_utf8(logs.lock().expect("unpoisoned").clone()).expect("UTF-8");
        assert!(
            logs.contains("ops") && logs.contains("analyst"),
            "requests are logged by token name: {logs}"
        );
        for secret in [OPS, ANALYST, wrong] {
            assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
            assert!(!logs.contains(&BASE64.encode(secret)[..16]), "{logs}");
        }
    }

    /// A log writer appending to a shared buffer.
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("unpoisoned").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
