//! The registry's REST API: the subset of Confluent Schema Registry that
//! serializers, deserializers and operators use, for Avro schemas.
//!
//! | method and path | does |
//! |---|---|
//! | `POST /subjects/{subject}/versions` | registers a schema (idempotent) → `{"id"}` |
//! | `POST /subjects/{subject}` | finds a schema under a subject |
//! | `GET /subjects`, `GET /subjects/{subject}/versions` | lists subjects, versions |
//! | `GET /subjects/{subject}/versions/{version\|latest}[/schema]` | one version |
//! | `GET /schemas/ids/{id}[/schema\|/versions\|/subjects]` | a schema by global id |
//! | `GET /schemas/types` | `["AVRO"]` |
//! | `GET\|PUT /config`, `GET\|PUT\|DELETE /config/{subject}` | compatibility levels |
//! | `POST /compatibility/subjects/{subject}/versions[/{version}]` | tests a schema |
//!
//! Errors are `{"error_code", "message"}` with the HTTP status in the code's
//! first three digits (40401 subject, 40402 version, 40403 schema not found,
//! 40408 no subject level, 409 incompatible, 42201 invalid schema, 42202
//! invalid version, 42203 invalid level, 42208 invalid subject).
//!
//! Every route needs a token from `auth.tokens`, as a bearer token or as HTTP
//! Basic credentials (the token's name and secret, which Confluent clients
//! send from `basic.auth.user.info`). Reads — the `GET`s, looking a schema up
//! and testing compatibility, which change nothing — take a valid token of
//! any scope; changes — registering, setting and deleting compatibility
//! levels — the `admin` scope. Refusals are the platform's problem documents
//! (`application/problem+json`: 401 with `WWW-Authenticate`, 403), as on every
//! other HTTP surface, not Confluent error bodies. `/health/*` and `/metrics`
//! stay open.

mod error;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderValue, header},
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post, put},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::instrument;
use tributary_platform::{
    auth::{AuthSettings, Guard, Scope, require},
    http::{operations_routes, postgres_ready},
};

use self::error::{ApiError, ApiJson, ApiPath, ApiQuery, CONTENT_TYPE, Reply};
use crate::{
    RegistrySettings,
    compatibility::{self, Level},
    store::{self, Candidate, Registered, Registration, VersionRef},
};

/// Largest request body accepted (a schema with room to spare); larger gets 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest subject name, in characters.
pub const MAX_SUBJECT_CHARS: usize = 255;

type Handled<T> = Result<T, ApiError>;

/// The registry's routes over `pool` (migrated with [`crate::MIGRATOR`]),
/// guarded by `auth` (reads: any valid token; changes: `admin`), with the
/// request body limit, and the open operations routes (`/health/live`,
/// `/health/ready`, `/metrics`). Validate `auth` before serving
/// ([`AuthSettings::validate`]); [`serve`] does.
pub fn router(pool: PgPool, auth: Arc<AuthSettings>) -> Router {
    let read = |route: MethodRouter<PgPool>| {
        let guard = Guard::any_token(auth.clone()).accepting_basic();
        route.route_layer(from_fn_with_state(guard, require))
    };
    let change = |route: MethodRouter<PgPool>| {
        let guard = Guard::new(auth.clone(), Scope::Admin).accepting_basic();
        route.route_layer(from_fn_with_state(guard, require))
    };
    Router::new()
        .route("/subjects", read(get(list_subjects)))
        .route("/subjects/{subject}", read(post(lookup)))
        .route(
            "/subjects/{subject}/versions",
            read(get(list_versions)).merge(change(post(register))),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            read(get(get_version)),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            read(get(get_version_schema)),
        )
        .route("/schemas/types", read(get(|| async { Reply(["AVRO"]) })))
        .route("/schemas/ids/{id}", read(get(get_schema)))
        .route("/schemas/ids/{id}/schema", read(get(get_raw_schema)))
        .route("/schemas/ids/{id}/versions", read(get(get_schema_versions)))
        .route("/schemas/ids/{id}/subjects", read(get(get_schema_subjects)))
        .route(
            "/config",
            read(get(get_global_config)).merge(change(put(put_global_config))),
        )
        .route(
            "/config/{subject}",
            read(get(get_subject_config)).merge(change(
                put(put_subject_config).delete(delete_subject_config),
            )),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            read(post(test_against_level)),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            read(post(test_against_version)),
        )
        .fallback(|| async { ApiError::new(404, "HTTP 404 Not Found") })
        .method_not_allowed_fallback(|| async { ApiError::new(405, "HTTP 405 Method Not Allowed") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(pool.clone())
        .merge(operations_routes(postgres_ready(pool)))
}

/// Serves [`router`] on `settings.listen` until `token` is cancelled; refuses
/// to start when `auth` is unsafe (no tokens and not `disabled`).
pub async fn serve(
    settings: &RegistrySettings,
    pool: PgPool,
    auth: Arc<AuthSettings>,
    token: CancellationToken,
) -> anyhow::Result<()> {
    auth.validate()?;
    tributary_platform::http::serve(settings.listen, router(pool, auth), token).await
}

/// A schema in a request (register, look up, test compatibility).
#[derive(Debug, Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    references: Option<Vec<Value>>,
}

impl SchemaRequest {
    /// Parses the schema: Avro only, without references.
    fn candidate(&self) -> Handled<Candidate> {
        if let Some(kind) = self.schema_type.as_deref()
            && !kind.eq_ignore_ascii_case("AVRO")
        {
            return Err(ApiError::invalid_schema(format!(
                "schema type {kind} is not supported: this registry accepts AVRO only"
            )));
        }
        if self
            .references
            .as_ref()
            .is_some_and(|refs| !refs.is_empty())
        {
            return Err(ApiError::invalid_schema(
                "schema references are not supported",
            ));
        }
        Candidate::parse(&self.schema)
            .map_err(|message| ApiError::invalid_schema(format!("Invalid schema: {message}")))
    }
}

#[derive(Debug, Default, Deserialize)]
struct ConfigParams {
    #[serde(rename = "defaultToGlobal")]
    default_to_global: Option<String>,
}

/// `{"compatibility": L}` as Confluent documents it; `compatibilityLevel` as
/// some clients send it.
#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

impl ConfigRequest {
    fn level(&self) -> Handled<Level> {
        let name = self
            .compatibility
            .as_deref()
            .or(self.compatibility_level.as_deref())
            .ok_or_else(|| {
                ApiError::invalid_level(
                    "the body must name a level: {\"compatibility\": \"BACKWARD\"}",
                )
            })?;
        name.parse().map_err(|error: compatibility::InvalidLevel| {
            ApiError::invalid_level(error.to_string())
        })
    }
}

/// Subjects are 1 to 255 characters, none of them control characters.
fn valid_subject(subject: String) -> Handled<String> {
    let chars = subject.chars().count();
    if chars == 0 || chars > MAX_SUBJECT_CHARS {
        return Err(ApiError::invalid_subject(format!(
            "Invalid subject: a subject name is 1 to {MAX_SUBJECT_CHARS} characters long, this one has {chars}"
        )));
    }
    if subject.chars().any(char::is_control) {
        return Err(ApiError::invalid_subject(
            "Invalid subject: a subject name must not contain control characters",
        ));
    }
    Ok(subject)
}

/// `latest`, `-1` (Confluent's alias for latest) or 1..=2^31-1.
fn parse_version(version: &str) -> Handled<VersionRef> {
    match version {
        "latest" | "-1" => Ok(VersionRef::Latest),
        number => match number.parse::<i32>() {
            Ok(number) if number >= 1 => Ok(VersionRef::Number(number)),
            _ => Err(ApiError::invalid_version(version)),
        },
    }
}

/// A schema id from the path; anything that is not one cannot exist.
fn parse_id(id: &str) -> Handled<i32> {
    id.parse::<i32>()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| ApiError::schema_not_found(format!("Schema {id} not found")))
}

fn version_body(registered: &Registered) -> Value {
    json!({
        "subject": registered.subject,
        "version": registered.version,
        "id": registered.id,
        "schema": registered.schema,
    })
}

/// The schema text itself as the body, as Confluent's `/schema` endpoints answer.
fn raw(schema: String) -> Response {
    let mut response = schema.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

#[instrument(skip_all, fields(subject = %subject))]
async fn register(
    State(pool): State<PgPool>,
    ApiPath(subject): ApiPath<String>,
    ApiJson(request): ApiJson<SchemaRequest>,
) -> Handled<Reply<Value>> {
    let subject = valid_subject(subject)?;
    let candidate = request.candidate()?;
    match store::register(&pool, &subject, &candidate).await? {
        Registration::Existing { id } | Registration::Created { id } => {
            Ok(Reply(json!({ "id": id })))
        }
        Registration::Incompatible {
            level,
            incompatibility,
        } => {
            tracing::info!(%level, %incompatibility, "refused an incompatible schema");
            Err(ApiError::incompatible(format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" \
                 (compatibility {level}, incompatible with version {}): {incompatibility}",
                incompatibility.version
            )))
        }
    }
}

#[instrument(skip_all, fields(subject = %subject))]
async fn lookup(
    State(pool): State<PgPool>,
    ApiPath(subject): ApiPath<String>,
    ApiJson(request): ApiJson<SchemaRequest>,
) -> Handled<Reply<Value>> {
    let subject = valid_subject(subject)?;
    let candidate = request.candidate()?;
    if let Some(found) = store::lookup(&pool, &subject, &candidate.normalized).await? {
        return Ok(Reply(version_body(&found)));
    }
    if store::subject_exists(&pool, &subject).await? {
        Err(ApiError::schema_not_found("Schema not found"))
    } else {
        Err(ApiError::subject_not_found(&subject))
    }
}

async fn list_subjects(State(pool): State<PgPool>) -> Handled<Reply<Vec<String>>> {
    Ok(Reply(store::subjects(&pool).await?))
}

async fn list_versions(
    State(pool): State<PgPool>,
    ApiPath(subject): ApiPath<String>,
) -> Handled<Reply<Vec<i32>>> {
    let subject = valid_subject(subject)?;
    let versions = store::versions(&pool, &subject).await?;
    if versions.is_empty() {
        return Err(ApiError::subject_not_found(&subject));
    }
    Ok(Reply(versions))
}

async fn find_version(pool: &PgPool, subject: String, version: &str) -> Handled<Registered> {
    let subject = valid_subject(subject)?;
    let wanted = parse_version(version)?;
    match store::version(pool, &subject, wanted).await? {
        Some(found) => Ok(found),
        None if store::subject_exists(pool, &subject).await? => {
            Err(ApiError::version_not_found(&subject, version))
        }
        None => Err(ApiError::subject_not_found(&subject)),
    }
}

async fn get_version(
    State(pool): State<PgPool>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
) -> Handled<Reply<Value>> {
    let found = find_version(&pool, subject, &version).await?;
    Ok(Reply(version_body(&found)))
}

async fn get_version_schema(
    State(pool): State<PgPool>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
) -> Handled<Response> {
    let found = find_version(&pool, subject, &version).await?;
    Ok(raw(found.schema))
}

/// `subject`, `format` and other query parameters are accepted and ignored:
/// ids are global and only Avro is served.
async fn find_schema(pool: &PgPool, id: &str) -> Handled<String> {
    let id = parse_id(id)?;
    store::schema(pool, id)
        .await?
        .ok_or_else(|| ApiError::schema_not_found(format!("Schema {id} not found")))
}

async fn get_schema(
    State(pool): State<PgPool>,
    ApiPath(id): ApiPath<String>,
) -> Handled<Reply<Value>> {
    // Confluent leaves `schemaType` out for Avro; clients default to it.
    Ok(Reply(json!({ "schema": find_schema(&pool, &id).await? })))
}

async fn get_raw_schema(
    State(pool): State<PgPool>,
    ApiPath(id): ApiPath<String>,
) -> Handled<Response> {
    Ok(raw(find_schema(&pool, &id).await?))
}

async fn schema_usages(pool: &PgPool, id: &str) -> Handled<Vec<(String, i32)>> {
    let id = parse_id(id)?;
    let usages = store::usages(pool, id).await?;
    if usages.is_empty() {
        return Err(ApiError::schema_not_found(format!("Schema {id} not found")));
    }
    Ok(usages)
}

async fn get_schema_versions(
    State(pool): State<PgPool>,
    ApiPath(id): ApiPath<String>,
) -> Handled<Reply<Value>> {
    let usages = schema_usages(&pool, &id).await?;
    let body = usages
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(Reply(Value::Array(body)))
}

async fn get_schema_subjects(
    State(pool): State<PgPool>,
    ApiPath(id): ApiPath<String>,
) -> Handled<Reply<Vec<String>>> {
    let mut subjects: Vec<String> = schema_usages(&pool, &id)
        .await?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    Ok(Reply(subjects))
}

async fn get_global_config(State(pool): State<PgPool>) -> Handled<Reply<Value>> {
    let level = store::config(&pool, None).await?.unwrap_or(Level::DEFAULT);
    Ok(Reply(json!({ "compatibilityLevel": level })))
}

#[instrument(skip_all)]
async fn put_global_config(
    State(pool): State<PgPool>,
    ApiJson(request): ApiJson<ConfigRequest>,
) -> Handled<Reply<Value>> {
    let level = request.level()?;
    store::set_config(&pool, None, level).await?;
    tracing::info!(%level, "set the global compatibility level");
    Ok(Reply(json!({ "compatibility": level })))
}

async fn get_subject_config(
    State(pool): State<PgPool>,
    ApiPath(subject): ApiPath<String>,
    ApiQuery(params): ApiQuery<ConfigParams>,
) -> Handled<Reply<Value>> {
    let subject = valid_subject(subject)?;
    let level = match store::config(&pool, Some(&subject)).await? {
        Some(level) => level,
        None if is_true(params.default_to_global.as_deref()) => {
            store::config(&pool, None).await?.unwrap_or(Level::DEFAULT)
        }
        None => return Err(ApiError::subject_level_not_configured(&subject)),
    };
    Ok(Reply(json!({ "compatibilityLevel": level })))
}

#[instrument(skip_all, fields(subject = %subject))]
async fn put_subject_config(
    State(pool): State<PgPool>,
    ApiPath(subject): ApiPath<String>,
    ApiJson(request): ApiJson<ConfigRequest>,
) -> Handled<Reply<Value>> {
    let subject = valid_subject(subject)?;
    let level = request.level()?;
    store::set_config(&pool, Some(&subject), level).await?;
    tracing::info!(%level, "set a subject's compatibility level");
    Ok(Reply(json!({ "compatibility": level })))
}

#[instrument(skip_all, fields(subject = %subject))]
async fn delete_subject_config(
    State(pool): State<PgPool>,
    ApiPath(subject): ApiPath<String>,
) -> Handled<Reply<Value>> {
    let subject = valid_subject(subject)?;
    match store::delete_config(&pool, &subject).await? {
        Some(level) => Ok(Reply(json!({ "compatibilityLevel": level }))),
        None => Err(ApiError::subject_level_not_configured(&subject)),
    }
}

/// Confluent clients send Python-style `True`/`False`.
fn is_true(flag: Option<&str>) -> bool {
    flag.is_some_and(|flag| flag.eq_ignore_ascii_case("true"))
}

fn compatibility_body(incompatibilities: &[compatibility::Incompatibility]) -> Reply<Value> {
    let messages: Vec<String> = incompatibilities.iter().map(ToString::to_string).collect();
    Reply(json!({ "is_compatible": messages.is_empty(), "messages": messages }))
}

/// Tests a schema against the versions the subject's level requires (none
/// for an unknown subject: anything is compatible with nothing).
#[instrument(skip_all, fields(subject = %subject))]
async fn test_against_level(
    State(pool): State<PgPool>,
    ApiPath(subject): ApiPath<String>,
    ApiJson(request): ApiJson<SchemaRequest>,
) -> Handled<Reply<Value>> {
    let subject = valid_subject(subject)?;
    let candidate = request.candidate()?;
    let history = store::history_in(&pool, &subject).await?;
    let level = store::level_in(&pool, &subject).await?;
    let versions = store::parsed(level.versions_to_check(&history))?;
    Ok(compatibility_body(&compatibility::check(
        level,
        &candidate.schema,
        &versions,
    )))
}

/// Tests a schema against one version, in the directions the subject's level requires.
#[instrument(skip_all, fields(subject = %subject, version = %version))]
async fn test_against_version(
    State(pool): State<PgPool>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<SchemaRequest>,
) -> Handled<Reply<Value>> {
    let target = find_version(&pool, subject, &version).await?;
    let candidate = request.candidate()?;
    let level = store::level_in(&pool, &target.subject).await?;
    let versions = store::parsed(std::slice::from_ref(&target))?;
    Ok(compatibility_body(&compatibility::check(
        level,
        &candidate.schema,
        &versions,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_one_to_255_characters_without_control_characters() {
        assert!(valid_subject("shop.orders.events-shop.orders.OrderPlaced".into()).is_ok());
        assert!(valid_subject("é".repeat(255)).is_ok());
        assert_eq!(
            valid_subject("a".repeat(256)).map_err(|e| e.code).err(),
            Some(42208)
        );
        assert!(valid_subject(String::new()).is_err());
        assert!(valid_subject("a\nb".into()).is_err());
    }

    #[test]
    fn versions_are_latest_or_positive_32_bit_numbers() {
        assert_eq!(parse_version("latest").ok(), Some(VersionRef::Latest));
        assert_eq!(parse_version("-1").ok(), Some(VersionRef::Latest));
        assert_eq!(parse_version("7").ok(), Some(VersionRef::Number(7)));
        for invalid in ["0", "-2", "x", "2147483648"] {
            assert_eq!(
                parse_version(invalid).map_err(|e| e.code).err(),
                Some(42202),
                "{invalid}"
            );
        }
    }
}
