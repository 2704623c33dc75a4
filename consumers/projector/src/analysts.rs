//! Analysts' read-only PostgreSQL roles over `read_model` (the schema this
//! crate owns): what `tributary ctl analyst grant|revoke` and an admin HTTP
//! handler call alike.
//!
//! [`grant_role`] gives a role exactly CONNECT on the database, USAGE on the
//! schema `read_model`, SELECT on its tables and views, and SELECT on the
//! tables created there later (default privileges); [`revoke_role`] takes
//! that back and leaves the role. The role name is checked
//! ([`AnalystRole::parse`]) and, besides, only ever reaches SQL as a bound
//! parameter that the server quotes with `format('%I')`: the statements
//! themselves are constants, in `analysts/*.sql` beside this file.

use std::fmt;

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tributary_platform::Secret;

/// The schema analysts read.
const SCHEMA: &str = "read_model";

/// Names PostgreSQL gives a meaning of its own in `GRANT … TO name`.
const SPECIAL_NAMES: &[&str] = &[
    "public",
    "none",
    "current_user",
    "current_role",
    "session_user",
];

/// A role name fit for analysts: `^[a-z_][a-z0-9_]{0,62}$`, not reserved by
/// PostgreSQL (`pg_*`, `public`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalystRole(String);

impl AnalystRole {
    /// Checks `name`; the error is one line that shows the name escaped.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        let mut chars = name.chars();
        let plain = matches!(chars.next(), Some('a'..='z' | '_'))
            && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
            && name.len() <= 63;
        if !plain {
            bail!(
                "role name {name:?} is refused: use lower-case letters, digits and _, \
                 not starting with a digit, at most 63 characters"
            );
        }
        if name.starts_with("pg_") || SPECIAL_NAMES.contains(&name) {
            bail!("role name {name:?} is reserved by PostgreSQL");
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AnalystRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `grant` did to the role itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleOutcome {
    /// Created without LOGIN.
    Created,
    /// Created with LOGIN and the password.
    CreatedWithLogin,
    /// Existed; left as it was.
    Existed,
    /// Existed; given LOGIN and the password.
    ExistedLoginSet,
}

/// The outcome of [`grant_role`]; its `Display` is what the CLI prints.
#[derive(Debug, Clone, Serialize)]
pub struct Granted {
    /// The role.
    pub role: String,
    /// What happened to the role itself.
    pub role_outcome: RoleOutcome,
    /// Whether the role may log in (now, whoever gave it LOGIN).
    pub login: bool,
    /// The database it may connect to.
    pub database: String,
    /// The schema it may read.
    pub schema: &'static str,
    /// The relations it may read now.
    pub relations: Vec<Relation>,
    /// What else the role may do in this database, each a line for the operator.
    pub warnings: Vec<String>,
}

/// The outcome of [`revoke_role`].
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    /// The role (it remains).
    pub role: String,
    /// Always true: what `grant` gave is gone.
    pub revoked: bool,
    /// The database.
    pub database: String,
    /// The schema.
    pub schema: &'static str,
}

impl fmt::Display for Revoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "revoked from {}: CONNECT on database {}, USAGE on schema {}, \
             SELECT on its tables and views, and on tables created there later (the role remains)",
            self.role, self.database, self.schema
        )
    }
}

/// Creates `role` if missing (NOLOGIN, or LOGIN with `password`) and grants
/// it read-only access to `read_model`, in one transaction. Running it again
/// is harmless.
pub async fn grant_role(
    pool: &PgPool,
    role: &AnalystRole,
    password: Option<&Secret>,
) -> anyhow::Result<Granted> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let role_outcome = ensure_role(&mut tx, role, password).await?;
    let relations = grant(&mut tx, role).await?;
    let warnings = other_access(&mut tx, role).await?;
    let login = attributes(&mut tx, role)
        .await?
        .is_some_and(|a| a.can_login);
    let database = current_database(&mut tx).await?;
    tx.commit().await.context("committing the grant")?;
    Ok(Granted {
        role: role.to_string(),
        role_outcome,
        login,
        database,
        schema: SCHEMA,
        relations,
        warnings,
    })
}

/// Revokes what [`grant_role`] gave `role`, in one transaction; the role stays.
pub async fn revoke_role(pool: &PgPool, role: &AnalystRole) -> anyhow::Result<Revoked> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    if attributes(&mut tx, role).await?.is_none() {
        bail!("role {role} does not exist");
    }
    refuse_unsuitable(&mut tx, role).await?;
    revoke(&mut tx, role).await?;
    let database = current_database(&mut tx).await?;
    tx.commit().await.context("committing the revoke")?;
    Ok(Revoked {
        role: role.to_string(),
        revoked: true,
        database,
        schema: SCHEMA,
    })
}

async fn current_database(conn: &mut PgConnection) -> anyhow::Result<String> {
    Ok(
        sqlx::query_scalar!(r#"SELECT current_database() AS "name!""#)
            .fetch_one(conn)
            .await?,
    )
}

impl fmt::Display for Granted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role_outcome {
            RoleOutcome::Created => "created",
            RoleOutcome::CreatedWithLogin => "created, password from the environment",
            RoleOutcome::Existed => "already existed, left as it was",
            RoleOutcome::ExistedLoginSet => "already existed, password from the environment",
        };
        let login = if self.login { "LOGIN" } else { "NOLOGIN" };
        writeln!(f, "role {} ({login}): {role}", self.role)?;
        writeln!(f, "granted CONNECT on database {}", self.database)?;
        writeln!(f, "granted USAGE on schema {}", self.schema)?;
        writeln!(
            f,
            "granted SELECT on {} relations in {}:",
            self.relations.len(),
            self.schema
        )?;
        for relation in &self.relations {
            writeln!(f, "  {:<24} {}", relation.name, relation.kind)?;
        }
        writeln!(
            f,
            "granted SELECT on tables created in {} later (default privileges)",
            self.schema
        )?;
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

/// A table or view of `read_model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relation {
    /// Its name in `read_model`.
    pub name: String,
    /// `table`, `view`, `materialized view`, `partitioned table` or `foreign table`.
    pub kind: String,
}

/// The role's attributes that matter here, or `None` if it does not exist.
#[derive(Debug)]
struct Attributes {
    powerful: bool,
    is_current_user: bool,
    can_login: bool,
}

async fn attributes(
    conn: &mut PgConnection,
    role: &AnalystRole,
) -> anyhow::Result<Option<Attributes>> {
    Ok(sqlx::query_as!(
        Attributes,
        r#"SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls AS "powerful!",
                  rolname = current_user AS "is_current_user!",
                  rolcanlogin AS "can_login!"
           FROM pg_roles WHERE rolname = $1"#,
        role.as_str(),
    )
    .fetch_optional(conn)
    .await?)
}

/// Refuses roles that could never be read-only analysts, and the role the
/// command itself runs as (revoking from it would lock the application out).
async fn refuse_unsuitable(conn: &mut PgConnection, role: &AnalystRole) -> anyhow::Result<()> {
    match attributes(conn, role).await? {
        Some(a) if a.is_current_user => {
            bail!("role {role} is the role this command connects as, not an analyst role")
        }
        Some(a) if a.powerful => bail!(
            "role {role} is a superuser or may create roles or databases, replicate or bypass \
             row security: not a read-only analyst role"
        ),
        _ => Ok(()),
    }
}

/// Creates the role if missing; with a password, gives it LOGIN and the
/// password (created or not). The password reaches the server as a bound
/// parameter, never in SQL text, and the server stores only its hash.
async fn ensure_role(
    conn: &mut PgConnection,
    role: &AnalystRole,
    password: Option<&Secret>,
) -> anyhow::Result<RoleOutcome> {
    let existed = attributes(conn, role).await?.is_some();
    refuse_unsuitable(conn, role).await?;
    sqlx::query!(
        r#"SELECT set_config('tributary.analyst', $1, true) AS "analyst",
                  set_config('tributary.analyst_password', $2, true) AS "password""#,
        role.as_str(),
        password.map_or("", Secret::expose),
    )
    .fetch_one(&mut *conn)
    .await?;
    let created = sqlx::query_file!("src/analysts/ensure_role.sql")
        .execute(&mut *conn)
        .await;
    // Whatever happened, the password does not stay in the session.
    sqlx::query!("SELECT set_config('tributary.analyst_password', '', true)")
        .fetch_one(&mut *conn)
        .await?;
    created.with_context(|| format!("creating role {role}"))?;
    Ok(match (existed, password.is_some()) {
        (false, false) => RoleOutcome::Created,
        (false, true) => RoleOutcome::CreatedWithLogin,
        (true, false) => RoleOutcome::Existed,
        (true, true) => RoleOutcome::ExistedLoginSet,
    })
}

/// Grants `role` exactly read access to `read_model`: CONNECT on the
/// database, USAGE on the schema, SELECT (and no other privilege) on every
/// table and view in it, and SELECT on tables the schema's owner creates
/// there later. Idempotent; runs in a transaction of its own, or in a
/// savepoint of the caller's (the projection rebuild calls it after swapping
/// fresh tables in, since moved tables do not get default privileges). The
/// role must exist. Returns the relations of `read_model`.
pub async fn grant(conn: &mut PgConnection, role: &AnalystRole) -> anyhow::Result<Vec<Relation>> {
    let mut tx = conn.begin().await?;
    name_the_role(&mut tx, role).await?;
    sqlx::query_file!("src/analysts/grant.sql")
        .execute(&mut *tx)
        .await
        .with_context(|| format!("granting read access on {SCHEMA} to {role}"))?;
    let relations = sqlx::query_file_as!(Relation, "src/analysts/relations.sql")
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(relations)
}

/// Names `role` to the transaction's DO blocks (`tributary.analyst`): a
/// bound parameter, which the blocks quote with `format('%I')`.
async fn name_the_role(conn: &mut PgConnection, role: &AnalystRole) -> sqlx::Result<()> {
    sqlx::query!(
        "SELECT set_config('tributary.analyst', $1, true)",
        role.as_str()
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Revokes what [`grant`] gave `role`; the role stays.
pub async fn revoke(conn: &mut PgConnection, role: &AnalystRole) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
    name_the_role(&mut tx, role).await?;
    sqlx::query_file!("src/analysts/revoke.sql")
        .execute(&mut *tx)
        .await
        .with_context(|| format!("revoking read access on {SCHEMA} from {role}"))?;
    tx.commit().await?;
    Ok(())
}

/// The roles holding USAGE on `read_model` (besides its owner) whose names
/// are analyst role names: those a projection rebuild re-grants to.
pub async fn granted_roles(conn: &mut PgConnection) -> anyhow::Result<Vec<AnalystRole>> {
    let names: Vec<String> = sqlx::query_scalar!(
        r#"SELECT r.rolname::text AS "name!"
         FROM pg_namespace n, aclexplode(n.nspacl) AS a JOIN pg_roles r ON r.oid = a.grantee
         WHERE n.nspname = 'read_model' AND a.privilege_type = 'USAGE' AND a.grantee <> n.nspowner
         ORDER BY 1"#,
    )
    .fetch_all(conn)
    .await?;
    Ok(names
        .iter()
        .filter_map(|name| AnalystRole::parse(name).ok())
        .collect())
}

/// What `role` may do in this database beyond reading `read_model`, whatever
/// the source (a grant to PUBLIC, a membership, an earlier grant): each a
/// line for the operator. Temporary tables (PUBLIC has TEMPORARY by default)
/// are not reported.
async fn other_access(conn: &mut PgConnection, role: &AnalystRole) -> anyhow::Result<Vec<String>> {
    Ok(
        sqlx::query_file_scalar!("src/analysts/other_access.sql", role.as_str())
            .fetch_all(conn)
            .await?
            .into_iter()
            .flatten()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lower_case_identifiers_are_accepted() {
        for name in ["analyst", "_bi", "bi_team_2", &"a".repeat(63)] {
            assert_eq!(AnalystRole::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn anything_else_is_refused_in_one_line() {
        for name in [
            "",
            "Analyst",
            "2fast",
            "bi-team",
            "bi team",
            "x\"; DROP ROLE postgres; --",
            "bi\nteam",
            "analyst\u{e9}",
            &"a".repeat(64),
            "public",
            "none",
            "current_user",
            "pg_monitor",
        ] {
            let error = AnalystRole::parse(name).unwrap_err().to_string();
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }
}
