//! The PostgreSQL pool and migrations.
//!
//! Each role crate owns the migrations of its own tables (`migrations/` beside
//! its `Cargo.toml`, exported as a `MIGRATOR`); [`migrate`] applies them all in
//! version order. Version ranges: 1xxx registry, 2xxx command side, 3xxx read side.

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::{
    ConnectOptions, PgPool,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::Secret;

/// Settings of the PostgreSQL connection pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// PostgreSQL URL (`DATABASE_URL` sets it too). Prints as `***`.
    pub url: Secret,
    /// Most connections the pool keeps open.
    pub max_connections: u32,
    /// How long a caller waits for a free connection before failing.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Create the database if it is missing and apply migrations at start-up.
    pub migrate: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/tributary"),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            migrate: true,
        }
    }
}

impl DatabaseSettings {
    /// Connection options parsed from the URL.
    pub fn connect_options(&self) -> anyhow::Result<PgConnectOptions> {
        let options: PgConnectOptions = self
            .url
            .expose()
            .parse()
            .context("database.url is not a valid PostgreSQL URL")?;
        Ok(options.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)))
    }

    /// A pool over the configured database (connections open lazily).
    pub fn pool(&self) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(self.connect_options()?))
    }
}

/// Opens the pool; with `migrate` set, creates the database if missing and
/// applies every migration in `migrators`.
pub async fn connect(
    settings: &DatabaseSettings,
    migrators: &[&Migrator],
) -> anyhow::Result<PgPool> {
    if settings.migrate
        && !sqlx::Postgres::database_exists(settings.url.expose())
            .await
            .context("cannot reach PostgreSQL at database.url")?
    {
        sqlx::Postgres::create_database(settings.url.expose())
            .await
            .context("cannot create the database named in database.url")?;
    }
    let pool = settings.pool()?;
    sqlx::query_scalar!(r#"SELECT 1 AS "one!""#)
        .fetch_one(&pool)
        .await
        .context("cannot reach PostgreSQL at database.url")?;
    if settings.migrate {
        migrate(&pool, migrators).await?;
    }
    Ok(pool)
}

/// Applies the migrations of several crates as one ordered set.
pub async fn migrate(pool: &PgPool, migrators: &[&Migrator]) -> anyhow::Result<()> {
    let mut migrations: Vec<_> = migrators.iter().flat_map(|m| m.iter().cloned()).collect();
    migrations.sort_by_key(|m| m.version);
    let mut migrator = Migrator::with_migrations(migrations);
    // A role started alone knows only its own crates' migrations.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.context("applying migrations")?;
    Ok(())
}

/// Scratch databases for tests: one per test, so tests run in parallel.
pub mod scratch {
    use super::*;

    /// Creates an empty database with a random name on the server of
    /// `DATABASE_URL` (default: the local server) and returns settings for it.
    pub async fn database() -> anyhow::Result<DatabaseSettings> {
        let base = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        database_on(&base, "tributary_test").await
    }

    /// Creates an empty database named `<prefix>_<random>` on the server of `url`.
    pub async fn database_on(url: &str, prefix: &str) -> anyhow::Result<DatabaseSettings> {
        let mut url = url_without_database(url);
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        url.push_str(&name);
        sqlx::Postgres::create_database(&url)
            .await
            .with_context(|| format!("creating scratch database {name}"))?;
        Ok(DatabaseSettings {
            url: Secret::new(url),
            max_connections: 8,
            ..DatabaseSettings::default()
        })
    }

    /// Drops a scratch database (close its pools first).
    pub async fn drop(settings: &DatabaseSettings) -> anyhow::Result<()> {
        sqlx::Postgres::force_drop_database(settings.url.expose())
            .await
            .context("dropping the scratch database")
    }

    fn url_without_database(url: &str) -> String {
        let without_query = url.split('?').next().unwrap_or(url);
        match without_query.rfind('/') {
            Some(slash) if slash > "postgres://".len() => without_query[..=slash].to_owned(),
            _ => format!("{without_query}/"),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn strips_the_database_name() {
            assert_eq!(
                super::url_without_database("postgres://u:p@h:5432/db?sslmode=disable"),
                "postgres://u:p@h:5432/"
            );
            assert_eq!(
                super::url_without_database("postgres://h:5432"),
                "postgres://h:5432/"
            );
        }
    }
}
