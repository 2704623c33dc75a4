//! Bearer tokens with scopes for every HTTP surface.
//!
//! Tokens are configured by name (`[auth.tokens.storefront]`, or
//! `TRIBUTARY__AUTH__TOKENS__STOREFRONT__SECRET` and `…__SCOPES=commands,query`).
//! A request without a valid token gets 401, one whose token lacks the
//! route's scope 403. Secrets compare in constant time and never reach a log:
//! requests are logged with the token's name.

use std::{collections::BTreeMap, fmt, str::FromStr, sync::Arc};

use anyhow::bail;
use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
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
}

/// The guard of a router: `route_layer(from_fn_with_state(Guard::new(auth, scope), require))`.
#[derive(Debug, Clone)]
pub struct Guard {
    auth: Arc<AuthSettings>,
    scope: Scope,
}

impl Guard {
    /// Requests must carry a token with `scope`.
    pub fn new(auth: Arc<AuthSettings>, scope: Scope) -> Self {
        Self { auth, scope }
    }
}

/// Middleware: 401 without a valid bearer token, 403 without the scope.
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if guard.auth.disabled {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return unauthorized("this endpoint needs an `Authorization: Bearer <token>` header");
    };
    match guard.auth.find(presented.as_bytes()) {
        None => unauthorized("the bearer token is not valid"),
        Some((client, scopes)) if !scopes.allow(guard.scope) => {
            tracing::info!(client, scope = %guard.scope, "refused: token lacks the scope");
            Problem::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "the token of {client} does not have the `{}` scope",
                    guard.scope
                ),
            )
            .into_response()
        }
        Some((client, _)) => {
            tracing::debug!(client, "authenticated");
            next.run(request).await
        }
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
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
}
