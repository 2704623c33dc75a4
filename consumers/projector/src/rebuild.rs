//! Rebuilding a projection beside the live one, then swapping it in.
//!
//! A rebuild creates empty copies of the projection's tables in a schema of
//! its own (`rebuild_<id>`), and a consumer replays the topics into them from
//! the earliest offset, storing its offsets under a name of its own. The
//! live tables keep serving meanwhile. The swap is one transaction:
//!
//! 1. lock the live projection's offset rows, which holds the live
//!    projector before its next batch touches a table;
//! 2. wait until the rebuild has applied at least as far as the live
//!    projection on every partition, then stop the rebuild's consumer;
//! 3. move the live tables out and the rebuilt ones into `read_model`
//!    (index names and grants carried over), hand the rebuild's offsets to
//!    the live projection, and drop the old tables.
//!
//! Readers see the old tables until the commit and the new ones after it.
//! The live projector resumes from the rebuild's offsets and skips what the
//! rebuild already applied.

mod replay;

use std::{future::Future, time::Duration};

use anyhow::{Context, bail};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use tributary_consumer::offsets;

use crate::{Projection, READ_MODEL_SCHEMA};

pub use replay::{Deployment, Outcome, Progress, rebuild};

/// How long a rebuild may go without reporting progress before another
/// rebuild of the same projection treats it as dead.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// A rebuild in progress.
#[derive(Debug, Clone)]
pub struct Rebuild {
    /// Its id in `projection.rebuilds`.
    pub id: i64,
    /// The projection rebuilt.
    pub projection: &'static Projection,
    /// The schema the fresh tables are built in.
    pub schema: String,
    /// The name the rebuild's consumer stores its offsets under.
    pub offsets_name: String,
}

impl Rebuild {
    /// Registers a rebuild of `projection` that has `target_messages` to
    /// replay, and creates its empty tables. A rebuild of the same
    /// projection that stopped reporting progress is cleaned up first; a
    /// live one is an error.
    pub async fn start(
        pool: &PgPool,
        projection: &'static Projection,
        target_messages: i64,
    ) -> anyhow::Result<Self> {
        let abandoned = sqlx::query!(
            "UPDATE projection.rebuilds
             SET finished_at = now(), outcome = 'failed: abandoned (no progress reported)'
             WHERE projection = $1 AND finished_at IS NULL AND updated_at < now() - $2::interval
             RETURNING rebuild_id, build_schema",
            projection.name,
            format!("{} seconds", ABANDONED_AFTER.as_secs()) as _,
        )
        .fetch_all(pool)
        .await?;
        for (id, schema) in abandoned
            .into_iter()
            .map(|r| (r.rebuild_id, r.build_schema))
        {
            tracing::warn!(id, %schema, "cleaning up an abandoned rebuild");
            drop_build(pool, projection, id, &schema).await?;
        }

        let mut tx = pool.begin().await?;
        let id: i64 = sqlx::query_scalar!(
            "INSERT INTO projection.rebuilds (projection, build_schema, target_messages)
             VALUES ($1, '', $2) RETURNING rebuild_id",
            projection.name,
            target_messages
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => anyhow::anyhow!(
                "a rebuild of {} is already running (see GET /projections)",
                projection.name
            ),
            _ => error.into(),
        })?;
        let rebuild = Self {
            id,
            projection,
            schema: format!("rebuild_{id}"),
            offsets_name: format!("{}@rebuild-{id}", projection.name),
        };
        sqlx::query!(
            "UPDATE projection.rebuilds SET build_schema = $2 WHERE rebuild_id = $1",
            id,
            &rebuild.schema
        )
        .execute(&mut *tx)
        .await?;
        // Identifiers below are ours (a number and the projection's table
        // names), never input.
        ddl(&mut tx, format!("CREATE SCHEMA {}", rebuild.schema)).await?;
        for table in projection.tables {
            ddl(
                &mut tx,
                format!(
                    "CREATE TABLE {schema}.{table} (LIKE {READ_MODEL_SCHEMA}.{table} INCLUDING ALL)",
                    schema = rebuild.schema
                ),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rebuild)
    }

    /// Messages the rebuild has applied (or skipped) so far.
    pub async fn applied(&self, pool: &PgPool) -> sqlx::Result<i64> {
        offsets::applied_total(pool, &self.offsets_name).await
    }

    /// Records progress (which also shows the rebuild is alive).
    pub async fn report(&self, pool: &PgPool, applied: i64) -> sqlx::Result<()> {
        sqlx::query!(
        "UPDATE projection.rebuilds SET applied_messages = $2, updated_at = now() WHERE rebuild_id = $1",
        self.id,
        applied
    )
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Swaps the rebuilt tables in (see the module's documentation).
    /// `stop_consumer` stops the rebuild's consumer and resolves once it has
    /// committed its last batch. Gives up, changing nothing, if the rebuild
    /// does not catch up with the live projection within `catch_up`.
    pub async fn swap<F>(
        &self,
        pool: &PgPool,
        catch_up: Duration,
        stop_consumer: F,
    ) -> anyhow::Result<i64>
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        let live = self.projection.name;
        let mut tx = pool.begin().await?;
        sqlx::query!("SET LOCAL lock_timeout = '30s'")
            .execute(&mut *tx)
            .await?;
        let live_offsets = offsets::lock_all(&mut tx, live).await?;

        // The live projector is held; let the rebuild reach where it stopped.
        let deadline = tokio::time::Instant::now() + catch_up;
        loop {
            let rebuilt = offsets::load(pool, &self.offsets_name).await?;
            let behind = live_offsets
                .iter()
                .filter(|(topic, partition, next)| {
                    rebuilt
                        .get(&(topic.clone(), *partition))
                        .copied()
                        .unwrap_or(0)
                        < *next
                })
                .count();
            if behind == 0 {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the rebuild is still behind the live projection on {behind} partitions after {catch_up:?}; nothing was swapped"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_consumer
            .await
            .context("stopping the rebuild's consumer")?;

        let retired = format!("retired_{}", self.id);
        ddl(&mut tx, format!("CREATE SCHEMA {retired}")).await?;
        for table in self.projection.tables {
            ddl(
                &mut tx,
                format!("ALTER TABLE {READ_MODEL_SCHEMA}.{table} SET SCHEMA {retired}"),
            )
            .await?;
            ddl(
                &mut tx,
                format!(
                    "ALTER TABLE {}.{table} SET SCHEMA {READ_MODEL_SCHEMA}",
                    self.schema
                ),
            )
            .await?;
            carry_over(&mut tx, &retired, table).await?;
        }
        let applied = offsets::hand_over(&mut tx, &self.offsets_name, live).await?;
        ddl(&mut tx, format!("DROP SCHEMA {retired} CASCADE")).await?;
        ddl(&mut tx, format!("DROP SCHEMA {}", self.schema)).await?;
        sqlx::query!(
            "UPDATE projection.rebuilds
             SET finished_at = now(), updated_at = now(), outcome = 'swapped', applied_messages = $2
             WHERE rebuild_id = $1",
            self.id,
            applied
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Gives the rebuild up: drops its tables and offsets, records why.
    pub async fn fail(&self, pool: &PgPool, reason: &str) -> anyhow::Result<()> {
        drop_build(pool, self.projection, self.id, &self.schema).await?;
        sqlx::query!(
            "UPDATE projection.rebuilds SET finished_at = now(), updated_at = now(), outcome = $2
             WHERE rebuild_id = $1",
            self.id,
            format!("failed: {reason}")
        )
        .execute(pool)
        .await?;
        Ok(())
    }
}

/// Runs one DDL statement built from our own identifiers.
///
/// Dynamic SQL, not compile-checked: DDL names schemas and tables (a
/// rebuild's own `rebuild_<id>`, `retired_<id>`), which cannot be bound
/// parameters; the names come from our constants and ids, never input.
async fn ddl(tx: &mut Transaction<'_, Postgres>, statement: String) -> sqlx::Result<()> {
    sqlx::query(AssertSqlSafe(statement))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Gives the table swapped into `read_model` the index names and the grants
/// of the one it replaces (now in `retired`), so later migrations and
/// analysts' roles see no difference.
async fn carry_over(
    tx: &mut Transaction<'_, Postgres>,
    retired: &str,
    table: &str,
) -> anyhow::Result<()> {
    // PostgreSQL quotes the identifiers (format's %I).
    let statements: Vec<String> = sqlx::query_scalar!(
        r#"SELECT format('ALTER INDEX %I.%I RENAME TO %I', $3::text, n.relname, o.relname) AS "statement!"
         FROM pg_index oi JOIN pg_class o ON o.oid = oi.indexrelid
         JOIN pg_index ni ON ni.indkey::text = oi.indkey::text
             AND ni.indisunique = oi.indisunique AND ni.indisprimary = oi.indisprimary
         JOIN pg_class n ON n.oid = ni.indexrelid
         WHERE oi.indrelid = format('%I.%I', $1::text, $2::text)::regclass
           AND ni.indrelid = format('%I.%I', $3::text, $2::text)::regclass
           AND n.relname <> o.relname
         UNION ALL
         SELECT format('GRANT %s ON %I.%I TO %I', g.privilege_type, $3::text, $2::text, g.grantee)
         FROM information_schema.role_table_grants g
         JOIN pg_tables t ON t.schemaname = g.table_schema AND t.tablename = g.table_name
         WHERE g.table_schema = $1 AND g.table_name = $2
           AND g.grantee <> t.tableowner AND g.grantee <> 'PUBLIC'"#,
        retired,
        table,
        READ_MODEL_SCHEMA
    )
    .fetch_all(&mut **tx)
    .await?;
    for statement in statements {
        ddl(tx, statement).await?;
    }
    Ok(())
}

/// Drops a rebuild's tables and offsets.
async fn drop_build(
    pool: &PgPool,
    projection: &Projection,
    id: i64,
    schema: &str,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    if !schema.is_empty() {
        ddl(
            &mut tx,
            format!("DROP SCHEMA IF EXISTS rebuild_{id} CASCADE"),
        )
        .await?;
    }
    offsets::forget(&mut tx, &format!("{}@rebuild-{id}", projection.name)).await?;
    tx.commit().await?;
    Ok(())
}
