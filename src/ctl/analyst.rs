//! `tributary ctl analyst`: a read-only PostgreSQL role for analysts.
//!
//! `grant` gives a role exactly CONNECT on the database, USAGE on the schema
//! `read_model`, SELECT on its tables and views, and SELECT on the tables
//! created there later (default privileges); `revoke` takes that back and
//! leaves the role. The role name is checked here ([`AnalystRole::parse`])
//! and, besides, only ever reaches SQL as a bound parameter that the server
//! quotes with `format('%I')`: the statements themselves are constants.

use std::fmt;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tributary_platform::Secret;

use crate::Settings;

/// The environment variable `grant --login` reads the password from.
pub const PASSWORD_VARIABLE: &str = "TRIBUTARY_ANALYST_PASSWORD";

/// Analyst access commands.
#[derive(Debug, Subcommand)]
pub enum AnalystCommand {
    /// Create ROLE if missing (NOLOGIN unless --login) and grant it read-only
    /// access to the read models: CONNECT, USAGE on schema read_model, SELECT
    /// on its tables and views, now and later. Running it again is harmless.
    Grant {
        /// The role: lower-case letters, digits and `_`, not starting with a
        /// digit, at most 63 characters.
        role: String,
        /// Give the role LOGIN, with the password in the environment variable
        /// TRIBUTARY_ANALYST_PASSWORD (never on the command line).
        #[arg(long)]
        login: bool,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Revoke what `grant` gave ROLE; the role itself stays.
    Revoke {
        /// The role.
        role: String,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an analyst command.
pub async fn run(settings: Settings, command: AnalystCommand) -> anyhow::Result<()> {
    match command {
        AnalystCommand::Grant { role, login, json } => {
            let role = AnalystRole::parse(&role)?;
            let password = if login {
                match std::env::var(PASSWORD_VARIABLE) {
                    Ok(password) if !password.is_empty() => Some(Secret::new(password)),
                    _ => bail!(
                        "--login needs the password in the environment variable {PASSWORD_VARIABLE}"
                    ),
                }
            } else {
                None
            };
            let mut conn = connect(&settings).await?;
            let mut tx = conn.begin().await?;
            let role_outcome = ensure_role(&mut tx, &role, password.as_ref()).await?;
            let relations = grant(&mut tx, &role).await?;
            let warnings = other_access(&mut tx, &role).await?;
            let login = attributes(&mut tx, &role)
                .await?
                .is_some_and(|a| a.can_login);
            let database: String = sqlx::query_scalar("SELECT current_database()")
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await.context("committing the grant")?;
            let granted = Granted {
                role: role.to_string(),
                role_outcome,
                login,
                database,
                schema: SCHEMA,
                relations,
                warnings,
            };
            if json {
                println!("{}", serde_json::to_string(&granted)?);
            } else {
                print!("{granted}");
            }
            Ok(())
        }
        AnalystCommand::Revoke { role, json } => {
            let role = AnalystRole::parse(&role)?;
            let mut conn = connect(&settings).await?;
            let mut tx = conn.begin().await?;
            if attributes(&mut tx, &role).await?.is_none() {
                bail!("role {role} does not exist");
            }
            refuse_unsuitable(&mut tx, &role).await?;
            revoke(&mut tx, &role).await?;
            let database: String = sqlx::query_scalar("SELECT current_database()")
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await.context("committing the revoke")?;
            if json {
                let revoked = serde_json::json!({
                    "role": role.as_str(),
                    "revoked": true,
                    "database": database,
                    "schema": SCHEMA,
                });
                println!("{revoked}");
            } else {
                println!(
                    "revoked from {role}: CONNECT on database {database}, USAGE on schema {SCHEMA}, \
                     SELECT on its tables and views, and on tables created there later (the role remains)"
                );
            }
            Ok(())
        }
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<PgConnection> {
    let pool = tributary_platform::db::connect(&settings.database, &crate::app::MIGRATORS).await?;
    Ok(pool.acquire().await?.detach())
}

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
enum RoleOutcome {
    /// Created without LOGIN.
    Created,
    /// Created with LOGIN and the password.
    CreatedWithLogin,
    /// Existed; left as it was.
    Existed,
    /// Existed; given LOGIN and the password.
    ExistedLoginSet,
}

/// The outcome of `grant`, as printed.
#[derive(Debug, Serialize)]
struct Granted {
    role: String,
    role_outcome: RoleOutcome,
    /// Whether the role may log in (now, whoever gave it LOGIN).
    login: bool,
    database: String,
    schema: &'static str,
    relations: Vec<Relation>,
    warnings: Vec<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Relation {
    /// Its name in `read_model`.
    pub name: String,
    /// `table`, `view`, `materialized view`, `partitioned table` or `foreign table`.
    pub kind: String,
}

/// The role's attributes that matter here, or `None` if it does not exist.
#[derive(Debug, sqlx::FromRow)]
struct Attributes {
    powerful: bool,
    is_current_user: bool,
    can_login: bool,
}

async fn attributes(
    conn: &mut PgConnection,
    role: &AnalystRole,
) -> anyhow::Result<Option<Attributes>> {
    Ok(sqlx::query_as(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls AS powerful,
                rolname = current_user AS is_current_user,
                rolcanlogin AS can_login
         FROM pg_roles WHERE rolname = $1",
    )
    .bind(role.as_str())
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
    sqlx::query(
        "SELECT set_config('tributary.analyst', $1, true),
                set_config('tributary.analyst_password', $2, true)",
    )
    .bind(role.as_str())
    .bind(password.map_or("", Secret::expose))
    .execute(&mut *conn)
    .await?;
    let created = sqlx::query(ENSURE_ROLE).execute(&mut *conn).await;
    // Whatever happened, the password does not stay in the session.
    sqlx::query("SELECT set_config('tributary.analyst_password', '', true)")
        .execute(&mut *conn)
        .await?;
    created.with_context(|| format!("creating role {role}"))?;
    Ok(match (existed, password.is_some()) {
        (false, false) => RoleOutcome::Created,
        (false, true) => RoleOutcome::CreatedWithLogin,
        (true, false) => RoleOutcome::Existed,
        (true, true) => RoleOutcome::ExistedLoginSet,
    })
}

const ENSURE_ROLE: &str = r"
DO $ensure$
DECLARE
    analyst  text := current_setting('tributary.analyst');
    password text := current_setting('tributary.analyst_password');
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = analyst) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', analyst);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created meanwhile by a concurrent grant
        END;
    END IF;
    IF password <> '' THEN
        BEGIN
            EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', analyst, password);
        EXCEPTION WHEN OTHERS THEN
            -- Re-raised so that the error's context (which the server logs)
            -- does not quote the statement, and so the password.
            RAISE EXCEPTION 'setting the password of role %: %', analyst, SQLERRM
                USING ERRCODE = SQLSTATE;
        END;
    END IF;
END
$ensure$";

/// Grants `role` exactly read access to `read_model`: CONNECT on the
/// database, USAGE on the schema, SELECT (and no other privilege) on every
/// table and view in it, and SELECT on tables the schema's owner creates
/// there later. Idempotent; runs in a transaction of its own, or in a
/// savepoint of the caller's (the projection rebuild calls it after swapping
/// fresh tables in, since moved tables do not get default privileges). The
/// role must exist. Returns the relations of `read_model`.
pub async fn grant(conn: &mut PgConnection, role: &AnalystRole) -> anyhow::Result<Vec<Relation>> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('tributary.analyst', $1, true)")
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(GRANT)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("granting read access on {SCHEMA} to {role}"))?;
    let relations = sqlx::query_as(RELATIONS).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(relations)
}

const GRANT: &str = r"
DO $grant$
DECLARE
    analyst text := current_setting('tributary.analyst');
    owner   text := (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'read_model');
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), analyst);
    EXECUTE format('REVOKE ALL ON SCHEMA read_model FROM %I', analyst);
    EXECUTE format('GRANT USAGE ON SCHEMA read_model TO %I', analyst);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA read_model FROM %I', analyst);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA read_model TO %I', analyst);
    -- regrole::text is already quoted where needed.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA read_model GRANT SELECT ON TABLES TO %I',
                   owner, analyst);
END
$grant$";

const RELATIONS: &str = "
SELECT c.relname AS name,
       CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                      WHEN 'p' THEN 'partitioned table' ELSE 'foreign table' END AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'read_model' AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
ORDER BY c.relkind, c.relname";

/// Revokes what [`grant`] gave `role`; the role stays.
pub async fn revoke(conn: &mut PgConnection, role: &AnalystRole) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('tributary.analyst', $1, true)")
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(REVOKE)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("revoking read access on {SCHEMA} from {role}"))?;
    tx.commit().await?;
    Ok(())
}

const REVOKE: &str = r"
DO $revoke$
DECLARE
    analyst text := current_setting('tributary.analyst');
    owner   text := (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'read_model');
BEGIN
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA read_model REVOKE SELECT ON TABLES FROM %I',
                   owner, analyst);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA read_model FROM %I', analyst);
    EXECUTE format('REVOKE ALL ON SCHEMA read_model FROM %I', analyst);
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM %I', current_database(), analyst);
END
$revoke$";

/// The roles holding USAGE on `read_model` (besides its owner) whose names
/// are analyst role names: those a projection rebuild re-grants to.
pub async fn granted_roles(conn: &mut PgConnection) -> anyhow::Result<Vec<AnalystRole>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT r.rolname::text
         FROM pg_namespace n, aclexplode(n.nspacl) AS a JOIN pg_roles r ON r.oid = a.grantee
         WHERE n.nspname = 'read_model' AND a.privilege_type = 'USAGE' AND a.grantee <> n.nspowner
         ORDER BY 1",
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
    Ok(sqlx::query_scalar(OTHER_ACCESS)
        .bind(role.as_str())
        .fetch_all(conn)
        .await?)
}

const OTHER_ACCESS: &str = "
SELECT format('may CREATE in database %I (REVOKE CREATE ON DATABASE %I FROM PUBLIC, or from the role)',
              current_database(), current_database())
WHERE has_database_privilege($1, current_database(), 'CREATE')
UNION ALL
SELECT format('may CREATE in schema %I (REVOKE CREATE ON SCHEMA %I FROM PUBLIC, or from the role)',
              n.nspname, n.nspname)
FROM pg_namespace n
WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
  AND has_schema_privilege($1, n.oid, 'CREATE')
UNION ALL
SELECT format('has %s on %I.%I', string_agg(p.privilege, ', ' ORDER BY p.ord), n.nspname, c.relname)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
    WITH ORDINALITY AS p(privilege, ord)
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
  AND NOT (n.nspname = 'read_model' AND p.privilege = 'SELECT')
  AND has_table_privilege($1, c.oid, p.privilege)
GROUP BY n.nspname, c.relname";

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
