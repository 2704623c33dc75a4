//! The registry's tables: schemas by global id, subject versions and
//! compatibility levels. SQL through bound parameters only.

use anyhow::Context;
use apache_avro::Schema;
use sqlx::{PgConnection, PgPool};

use crate::compatibility::{self, Incompatibility, Level};

/// The `registry_config` row holding the global level (subjects are never empty).
const GLOBAL: &str = "";

/// First key of the registry's advisory locks, so they never meet other crates' locks.
const LOCK_NAMESPACE: i32 = 1001;

/// A schema offered for registration, parsed, with the normalized JSON form
/// that identifies it (the parsed schema serialized back: whitespace, key
/// order and namespace spelling no longer matter, defaults and docs are kept,
/// unlike the Parsing Canonical Form).
#[derive(Debug)]
pub(crate) struct Candidate {
    pub(crate) schema: Schema,
    pub(crate) normalized: String,
}

impl Candidate {
    /// Parses Avro schema text; the error is the parser's message.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let schema = Schema::parse_str(text).map_err(|error| error.to_string())?;
        let normalized = serde_json::to_string(&schema).map_err(|error| error.to_string())?;
        Ok(Self { schema, normalized })
    }
}

/// One version of a subject.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) subject: String,
    pub(crate) version: i32,
    pub(crate) id: i32,
    pub(crate) schema: String,
}

/// A version of a subject as requested: a number or the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionRef {
    Latest,
    Number(i32),
}

/// What a registration did.
#[derive(Debug)]
pub(crate) enum Registration {
    /// The subject already had this schema.
    Existing { id: i32 },
    /// A new version was created.
    Created { id: i32 },
    /// The subject's level refused the schema.
    Incompatible {
        level: Level,
        incompatibility: Incompatibility,
    },
}

/// Registers `candidate` under `subject` unless it is there already, checking
/// compatibility as the subject's level requires. Registrations to one subject
/// are serialized by an advisory lock held until commit, so two of them never
/// take the same version number.
pub(crate) async fn register(
    pool: &PgPool,
    subject: &str,
    candidate: &Candidate,
) -> anyhow::Result<Registration> {
    let mut tx = pool.begin().await.context("beginning a registration")?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        LOCK_NAMESPACE,
        subject
    )
    .execute(&mut *tx)
    .await
    .context("locking the subject")?;

    let history = history(&mut tx, subject).await?;
    if let Some(existing) = history.iter().find(|v| v.schema == candidate.normalized) {
        return Ok(Registration::Existing { id: existing.id });
    }

    let level = level(&mut tx, subject).await?;
    let versions = parsed(level.versions_to_check(&history))?;
    if let Some(incompatibility) = compatibility::check(level, &candidate.schema, &versions)
        .into_iter()
        .next()
    {
        return Ok(Registration::Incompatible {
            level,
            incompatibility,
        });
    }

    let id = insert_schema(&mut tx, &candidate.normalized).await?;
    let version = history.last().map_or(1, |latest| latest.version + 1);
    sqlx::query!(
        "INSERT INTO registry_subject_versions (subject, version, schema_id) VALUES ($1, $2, $3)",
        subject,
        version,
        id
    )
    .execute(&mut *tx)
    .await
    .context("inserting the subject version")?;
    tx.commit().await.context("committing a registration")?;
    tracing::info!(subject, version, id, "registered a schema");
    Ok(Registration::Created { id })
}

/// The id of `schema`, inserting it if new. Safe against a concurrent insert of
/// the same schema under another subject: the conflict waits for that
/// transaction, and the follow-up statement sees its row.
async fn insert_schema(conn: &mut PgConnection, schema: &str) -> anyhow::Result<i32> {
    let find = || {
        sqlx::query_scalar!(
            "SELECT id FROM registry_schemas WHERE fingerprint = sha256($1)",
            schema.as_bytes()
        )
    };
    if let Some(id) = find()
        .fetch_optional(&mut *conn)
        .await
        .context("finding the schema")?
    {
        return Ok(id);
    }
    let inserted = sqlx::query_scalar!(
        "INSERT INTO registry_schemas (schema_type, schema, fingerprint) VALUES ('AVRO', $1, sha256($2))
         ON CONFLICT (fingerprint) DO NOTHING RETURNING id",
        schema,
        schema.as_bytes()
    )
    .fetch_optional(&mut *conn)
    .await
    .context("inserting the schema")?;
    match inserted {
        Some(id) => Ok(id),
        None => find()
            .fetch_one(&mut *conn)
            .await
            .context("finding the schema inserted concurrently"),
    }
}

/// Parses stored schemas (stored only after they parsed, so failure is corruption).
pub(crate) fn parsed(versions: &[Registered]) -> anyhow::Result<Vec<(i32, Schema)>> {
    versions
        .iter()
        .map(|v| {
            Schema::parse_str(&v.schema)
                .map(|schema| (v.version, schema))
                .with_context(|| {
                    format!(
                        "stored schema {} of {} version {} does not parse",
                        v.id, v.subject, v.version
                    )
                })
        })
        .collect()
}

/// Every version of `subject`, oldest first.
pub(crate) async fn history(
    conn: &mut PgConnection,
    subject: &str,
) -> anyhow::Result<Vec<Registered>> {
    sqlx::query_as!(
        Registered,
        "SELECT v.subject, v.version, s.id, s.schema
         FROM registry_subject_versions v JOIN registry_schemas s ON s.id = v.schema_id
         WHERE v.subject = $1 ORDER BY v.version",
        subject
    )
    .fetch_all(&mut *conn)
    .await
    .context("reading the subject's versions")
}

/// [`history`] on a pooled connection.
pub(crate) async fn history_in(pool: &PgPool, subject: &str) -> anyhow::Result<Vec<Registered>> {
    let mut conn = pool.acquire().await.context("acquiring a connection")?;
    history(&mut conn, subject).await
}

/// One version of `subject`, if both exist.
pub(crate) async fn version(
    pool: &PgPool,
    subject: &str,
    version: VersionRef,
) -> anyhow::Result<Option<Registered>> {
    // Latest is the highest number: `$2` NULL orders by version, descending.
    let number = match version {
        VersionRef::Latest => None,
        VersionRef::Number(number) => Some(number),
    };
    sqlx::query_as!(
        Registered,
        "SELECT v.subject, v.version, s.id, s.schema
         FROM registry_subject_versions v JOIN registry_schemas s ON s.id = v.schema_id
         WHERE v.subject = $1 AND ($2::int IS NULL OR v.version = $2)
         ORDER BY v.version DESC LIMIT 1",
        subject,
        number
    )
    .fetch_optional(pool)
    .await
    .context("reading a version")
}

/// The version of `subject` that holds `normalized`, if any.
pub(crate) async fn lookup(
    pool: &PgPool,
    subject: &str,
    normalized: &str,
) -> anyhow::Result<Option<Registered>> {
    sqlx::query_as!(
        Registered,
        "SELECT v.subject, v.version, s.id, s.schema
         FROM registry_subject_versions v JOIN registry_schemas s ON s.id = v.schema_id
         WHERE v.subject = $1 AND s.fingerprint = sha256($2)",
        subject,
        normalized.as_bytes()
    )
    .fetch_optional(pool)
    .await
    .context("looking up a schema")
}

/// Whether `subject` has any version.
pub(crate) async fn subject_exists(pool: &PgPool, subject: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM registry_subject_versions WHERE subject = $1) AS "exists!""#,
        subject
    )
        .fetch_one(pool)
        .await
        .context("checking the subject")
}

/// Every subject, sorted.
pub(crate) async fn subjects(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar!("SELECT DISTINCT subject FROM registry_subject_versions ORDER BY subject")
        .fetch_all(pool)
        .await
        .context("listing subjects")
}

/// The version numbers of `subject`, ascending.
pub(crate) async fn versions(pool: &PgPool, subject: &str) -> anyhow::Result<Vec<i32>> {
    sqlx::query_scalar!(
        "SELECT version FROM registry_subject_versions WHERE subject = $1 ORDER BY version",
        subject
    )
    .fetch_all(pool)
    .await
    .context("listing versions")
}

/// The schema text of an id.
pub(crate) async fn schema(pool: &PgPool, id: i32) -> anyhow::Result<Option<String>> {
    sqlx::query_scalar!("SELECT schema FROM registry_schemas WHERE id = $1", id)
        .fetch_optional(pool)
        .await
        .context("reading a schema")
}

/// The `(subject, version)` pairs that use schema `id`.
pub(crate) async fn usages(pool: &PgPool, id: i32) -> anyhow::Result<Vec<(String, i32)>> {
    Ok(sqlx::query!(
        "SELECT subject, version FROM registry_subject_versions WHERE schema_id = $1 ORDER BY subject, version",
        id
    )
    .fetch_all(pool)
    .await
    .context("listing a schema's versions")?
    .into_iter()
    .map(|r| (r.subject, r.version))
    .collect())
}

/// The level that applies to `subject`: its own, else the global one, else the default.
pub(crate) async fn level(conn: &mut PgConnection, subject: &str) -> anyhow::Result<Level> {
    let configured: Option<String> = sqlx::query_scalar!(
        "SELECT compatibility FROM registry_config WHERE subject IN ($1, $2) ORDER BY subject DESC LIMIT 1",
        subject,
        GLOBAL
    )
    .fetch_optional(&mut *conn)
    .await
    .context("reading the compatibility level")?;
    to_level(configured).map(|level| level.unwrap_or(Level::DEFAULT))
}

/// [`level`] on a pooled connection.
pub(crate) async fn level_in(pool: &PgPool, subject: &str) -> anyhow::Result<Level> {
    let mut conn = pool.acquire().await.context("acquiring a connection")?;
    level(&mut conn, subject).await
}

/// The level configured for `subject` (or globally, for `None`), if any.
pub(crate) async fn config(pool: &PgPool, subject: Option<&str>) -> anyhow::Result<Option<Level>> {
    let configured = sqlx::query_scalar!(
        "SELECT compatibility FROM registry_config WHERE subject = $1",
        subject.unwrap_or(GLOBAL)
    )
    .fetch_optional(pool)
    .await
    .context("reading the compatibility level")?;
    to_level(configured)
}

/// Sets the level of `subject` (or the global one, for `None`).
pub(crate) async fn set_config(
    pool: &PgPool,
    subject: Option<&str>,
    level: Level,
) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO registry_config (subject, compatibility) VALUES ($1, $2) \
         ON CONFLICT (subject) DO UPDATE SET compatibility = EXCLUDED.compatibility, updated_at = now()",
        subject.unwrap_or(GLOBAL),
        level.as_str()
    )
    .execute(pool)
    .await
    .context("setting the compatibility level")?;
    Ok(())
}

/// Removes the level of `subject`, returning it if there was one.
pub(crate) async fn delete_config(pool: &PgPool, subject: &str) -> anyhow::Result<Option<Level>> {
    let deleted = sqlx::query_scalar!(
        "DELETE FROM registry_config WHERE subject = $1 RETURNING compatibility",
        subject
    )
    .fetch_optional(pool)
    .await
    .context("deleting the compatibility level")?;
    to_level(deleted)
}

fn to_level(stored: Option<String>) -> anyhow::Result<Option<Level>> {
    stored
        .map(|name| name.parse::<Level>().context("stored compatibility level"))
        .transpose()
}
