//! `tributary ctl analyst`: the analysts' role reads every read model and
//! nothing else, and can neither write nor create anything.

use std::process::Command;

use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection, postgres::PgConnectOptions};
use tributary::ctl::analyst::PASSWORD_VARIABLE;
use tributary_projector::analysts::{self as analyst, AnalystRole};
use uuid::Uuid;

use crate::helpers::test_settings;

/// The analyst's password (trust auth ignores it; the flag needs one).
const PASSWORD: &str = "correct horse battery staple";

/// SQLSTATE insufficient_privilege.
const PERMISSION_DENIED: &str = "42501";

/// Every relation the read side's migrations put in `read_model`.
const READ_MODEL: &[&str] = &[
    "customer_summary",
    "daily_sales",
    "fulfilment",
    "order_lines",
    "order_timeline",
    "orders",
    "product_sales",
    "projection_offsets",
];

/// Tables outside `read_model`: the write model, the outbox, the registry,
/// the consumers' offsets and the rebuilds.
const NOT_READ_MODEL: &[&str] = &[
    "commands.orders",
    "commands.order_lines",
    "commands.outbox",
    "commands.customers",
    "commands.idempotency_keys",
    "public.registry_schemas",
    "public.registry_subject_versions",
    "public.registry_config",
    "consumer.offsets",
    "projection.rebuilds",
];

/// Runs the binary against `database_url`; returns exit code, stdout, stderr.
fn tributary(database_url: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .env_remove("KAFKA_BROKERS")
        .env_remove(PASSWORD_VARIABLE)
        .env("DATABASE_URL", database_url)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A role of this test's own (role names are cluster-wide), dropped at the
/// end even if the test fails.
struct Analyst {
    role: String,
    url: String,
}

impl Analyst {
    fn new(url: &str) -> Self {
        Self {
            role: format!("analyst_{}", Uuid::new_v4().simple()),
            url: url.to_owned(),
        }
    }

    /// `ctl analyst grant` with `args`, expected to succeed; its JSON output.
    fn grant(&self, args: &[&str]) -> Value {
        let mut argv = vec!["ctl", "analyst", "grant", &self.role, "--json"];
        argv.extend_from_slice(args);
        let (code, stdout, stderr) = tributary(&self.url, &[(PASSWORD_VARIABLE, PASSWORD)], &argv);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).expect("one JSON object")
    }

    /// A session as the role itself.
    async fn connect(&self) -> PgConnection {
        let options: PgConnectOptions = self.url.parse().unwrap();
        PgConnection::connect_with(&options.username(&self.role).password(PASSWORD))
            .await
            .expect("the analyst logs in")
    }
}

impl Drop for Analyst {
    fn drop(&mut self) {
        let (role, url) = (self.role.clone(), self.url.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                // The name is ours (analyst_<uuid>), not input.
                let drop = format!(
                    "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN \
                     DROP OWNED BY {role}; DROP ROLE {role}; END IF; END $$"
                );
                sqlx::raw_sql(AssertSqlSafe(drop)).execute(&mut conn).await
            })
        });
        if let Ok(Err(error)) = cleanup.join() {
            eprintln!("dropping role {}: {error}", self.role);
        }
    }
}

/// The SQLSTATE of a statement's failure, or a panic if it succeeded.
async fn sqlstate(conn: &mut PgConnection, sql: &'static str) -> String {
    match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(_) => panic!("{sql}: succeeded"),
        Err(error) => code_of(&error).unwrap_or_else(|| panic!("{sql}: {error}")),
    }
}

async fn count(conn: &mut PgConnection, relation: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {relation}")))
        .fetch_one(conn)
        .await
}

fn code_of(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|code| code.into_owned())
}

#[tokio::test]
async fn the_analyst_reads_every_read_model_and_nothing_else() {
    let settings = test_settings().await;
    let url = settings.database.url.expose().to_owned();
    let analyst = Analyst::new(&url);

    let granted = analyst.grant(&["--login"]);
    assert_eq!(granted["role_outcome"], "created_with_login");
    assert_eq!(granted["login"], true);
    assert_eq!(granted["warnings"], serde_json::json!([]), "{granted}");
    let mut relations: Vec<&str> = granted["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    relations.sort_unstable();
    assert_eq!(relations, READ_MODEL);

    let mut admin = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO read_model.orders (order_id, customer_id, status, currency, total_minor,
                                        line_count, item_count, placed_at, updated_at)
         VALUES (gen_random_uuid(), gen_random_uuid(), 'placed', 'EUR', 1250, 1, 1, now(), now())",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    let mut conn = analyst.connect().await;
    assert_eq!(count(&mut conn, "read_model.orders").await.unwrap(), 1);
    for relation in READ_MODEL {
        let relation = format!("read_model.{relation}");
        count(&mut conn, &relation)
            .await
            .unwrap_or_else(|error| panic!("SELECT on {relation}: {error}"));
    }

    for table in NOT_READ_MODEL {
        let error = count(&mut conn, table)
            .await
            .expect_err("reading outside read_model is denied");
        assert_eq!(
            code_of(&error).as_deref(),
            Some(PERMISSION_DENIED),
            "SELECT on {table}: {error}"
        );
    }

    for sql in [
        "INSERT INTO read_model.orders (order_id, customer_id, status, currency, total_minor,
                                        line_count, item_count, placed_at, updated_at)
         VALUES (gen_random_uuid(), gen_random_uuid(), 'placed', 'EUR', 1, 1, 1, now(), now())",
        "UPDATE read_model.orders SET total_minor = 0",
        "DELETE FROM read_model.orders",
        "TRUNCATE read_model.orders",
        "INSERT INTO read_model.daily_sales (day, currency) VALUES (current_date, 'EUR')",
        "CREATE TABLE read_model.mine (x int)",
        "CREATE VIEW read_model.mine AS SELECT 1 AS x",
        "CREATE TABLE public.mine (x int)",
        "CREATE SCHEMA mine",
    ] {
        assert_eq!(sqlstate(&mut conn, sql).await, PERMISSION_DENIED, "{sql}");
    }
    assert_eq!(count(&mut admin, "read_model.orders").await.unwrap(), 1);

    // Running it again is fine and changes nothing.
    let again = analyst.grant(&[]);
    assert_eq!(again["role_outcome"], "existed");
    assert_eq!(again["login"], true);
    assert_eq!(count(&mut conn, "read_model.orders").await.unwrap(), 1);

    // A read model added later is readable without another grant.
    sqlx::raw_sql("CREATE TABLE read_model.added_later (x int); INSERT INTO read_model.added_later VALUES (1)")
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(count(&mut conn, "read_model.added_later").await.unwrap(), 1);
}

#[tokio::test]
async fn revoke_takes_back_what_grant_gave_and_keeps_the_role() {
    let settings = test_settings().await;
    let url = settings.database.url.expose().to_owned();
    let analyst = Analyst::new(&url);
    analyst.grant(&["--login"]);

    let (code, stdout, stderr) = tributary(
        &url,
        &[],
        &["ctl", "analyst", "revoke", &analyst.role, "--json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let revoked: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(revoked["revoked"], true);

    let mut admin = PgConnection::connect(&url).await.unwrap();
    let privileges: (i64, bool, bool, i64) = sqlx::query_as(
        "WITH analyst AS (SELECT oid FROM pg_roles WHERE rolname = $1)
         SELECT (SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a
                 WHERE d.datname = current_database() AND a.grantee = (SELECT oid FROM analyst)),
                has_schema_privilege($1, 'read_model', 'USAGE'),
                has_table_privilege($1, 'read_model.orders', 'SELECT'),
                (SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a
                 WHERE a.grantee = (SELECT oid FROM analyst))",
    )
    .bind(&analyst.role)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(privileges, (0, false, false, 0));

    // The role remains; it reads nothing. (It can still connect: PostgreSQL
    // grants CONNECT to PUBLIC.)
    let mut conn = analyst.connect().await;
    let error = count(&mut conn, "read_model.orders").await.unwrap_err();
    assert_eq!(
        code_of(&error).as_deref(),
        Some(PERMISSION_DENIED),
        "{error}"
    );

    // And grant gives it all back.
    analyst.grant(&[]);
    assert_eq!(count(&mut conn, "read_model.orders").await.unwrap(), 0);
}

#[tokio::test]
async fn the_role_is_nologin_unless_asked_and_login_needs_the_variable() {
    let settings = test_settings().await;
    let url = settings.database.url.expose().to_owned();
    let analyst = Analyst::new(&url);

    let (code, stdout, stderr) = tributary(
        &url,
        &[],
        &["ctl", "analyst", "grant", &analyst.role, "--login"],
    );
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(PASSWORD_VARIABLE), "{stderr}");

    let mut admin = PgConnection::connect(&url).await.unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(&analyst.role)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(!exists, "refused before creating anything");

    let (code, stdout, stderr) = tributary(&url, &[], &["ctl", "analyst", "grant", &analyst.role]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("NOLOGIN"), "{stdout}");
    assert!(stdout.contains("read_model"), "{stdout}");
    let can_login: bool = sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(&analyst.role)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!can_login);

    // A NOLOGIN role is for membership: its grants work through SET ROLE.
    sqlx::raw_sql(AssertSqlSafe(format!("SET ROLE {}", analyst.role)))
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(count(&mut admin, "read_model.orders").await.unwrap(), 0);
    let error = count(&mut admin, "commands.orders").await.unwrap_err();
    assert_eq!(
        code_of(&error).as_deref(),
        Some(PERMISSION_DENIED),
        "{error}"
    );
}

#[tokio::test]
async fn a_role_name_that_is_not_a_plain_identifier_is_refused_in_one_line() {
    let settings = test_settings().await;
    let url = settings.database.url.expose().to_owned();
    for role in [
        "Analyst",
        "bi-team",
        "x; DROP TABLE read_model.orders; --",
        "bi\"team",
        "bi\nteam",
        "9lives",
        &"a".repeat(64),
        "public",
        "pg_read_all_data",
    ] {
        let (code, stdout, stderr) = tributary(&url, &[], &["ctl", "analyst", "grant", role]);
        assert_eq!(code, 1, "{role:?}: {stdout}");
        assert_eq!(stderr.trim().lines().count(), 1, "{role:?}: {stderr}");
        assert!(stderr.contains("role name"), "{role:?}: {stderr}");
    }
    // A role that could never be read-only is refused too.
    let (code, _, stderr) = tributary(&url, &[], &["ctl", "analyst", "grant", "postgres"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn grant_covers_tables_swapped_into_the_read_model() {
    let settings = test_settings().await;
    let url = settings.database.url.expose().to_owned();
    let analyst = Analyst::new(&url);
    analyst.grant(&["--login"]);

    // What a rebuild does: build elsewhere, move in. Moved tables do not get
    // the schema's default privileges.
    let mut admin = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE SCHEMA build; CREATE TABLE build.fresh (x int); INSERT INTO build.fresh VALUES (1);
         ALTER TABLE build.fresh SET SCHEMA read_model",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let mut conn = analyst.connect().await;
    let error = count(&mut conn, "read_model.fresh").await.unwrap_err();
    assert_eq!(
        code_of(&error).as_deref(),
        Some(PERMISSION_DENIED),
        "{error}"
    );

    let mut tx = admin.begin().await.unwrap();
    let roles = analyst::granted_roles(&mut tx).await.unwrap();
    let role = AnalystRole::parse(&analyst.role).unwrap();
    assert!(roles.contains(&role), "{roles:?}");
    let relations = analyst::grant(&mut tx, &role).await.unwrap();
    assert!(relations.iter().any(|r| r.name == "fresh"), "{relations:?}");
    tx.commit().await.unwrap();

    assert_eq!(count(&mut conn, "read_model.fresh").await.unwrap(), 1);
}

#[tokio::test]
async fn grant_warns_of_access_it_does_not_control() {
    let settings = test_settings().await;
    let url = settings.database.url.expose().to_owned();
    let analyst = Analyst::new(&url);
    analyst.grant(&[]);

    // What PostgreSQL before 15 grants everyone, and a grant made by hand.
    let mut admin = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "GRANT CREATE ON SCHEMA public TO PUBLIC; GRANT SELECT, UPDATE ON commands.orders TO {}",
        analyst.role
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    let (code, stdout, stderr) = tributary(&url, &[], &["ctl", "analyst", "grant", &analyst.role]);
    assert_eq!(code, 0, "{stderr}");
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{stdout}");
    for expected in [
        "may CREATE in schema public",
        "has SELECT, UPDATE on commands.orders",
    ] {
        assert!(warnings.iter().any(|w| w.contains(expected)), "{stdout}");
    }
}
