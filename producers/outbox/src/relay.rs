//! What the relay does to the outbox: read unpublished rows in id order,
//! mark them published, delete old published rows, report the backlog, and
//! the wake-up machinery (the insert trigger notifies [`CHANNEL`] only while
//! the relay says it is idle; see migration 2005).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, types::Json};

/// The channel the outbox's insert trigger notifies (migrations 2003, 2005).
pub const CHANNEL: &str = "tributary_outbox";

/// The advisory lock every inserting transaction holds shared while it reads
/// the relay's idle flag ("tribwake"; the outbox trigger names the same key).
const WAKE_LOCK: i64 = 0x7472_6962_7761_6b65;

/// Most rows one clean-up statement deletes, so a large backlog of published
/// rows never holds one long transaction.
const CLEANUP_SLICE: i64 = 10_000;

/// An unpublished outbox row, as the relay produces it.
#[derive(Debug, Clone)]
pub struct Unpublished {
    /// The row's id (publication order).
    pub id: i64,
    /// The topic to produce to.
    pub topic: String,
    /// The Kafka key.
    pub key: String,
    /// The Kafka value.
    pub value: Vec<u8>,
    /// The Kafka headers (values as text).
    pub headers: Map<String, Value>,
}

/// Up to `limit` unpublished rows, in id order.
pub async fn unpublished(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Unpublished>> {
    let rows = sqlx::query!(
        r#"SELECT id, topic, key, value, headers AS "headers: Json<Map<String, Value>>"
           FROM commands.outbox WHERE published_at IS NULL ORDER BY id LIMIT $1"#,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Unpublished {
            id: row.id,
            topic: row.topic,
            key: row.key,
            value: row.value,
            headers: row.headers.0,
        })
        .collect())
}

/// Marks rows `ids` published (the broker acknowledged them).
pub async fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE commands.outbox SET published_at = now() WHERE id = ANY($1)",
        ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes rows published before `cutoff`, a bounded slice at a time;
/// returns how many.
pub async fn delete_published_before(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query!(
            "DELETE FROM commands.outbox WHERE id IN (
                 SELECT id FROM commands.outbox WHERE published_at < $1 LIMIT $2)",
            cutoff,
            CLEANUP_SLICE,
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < CLEANUP_SLICE as u64 {
            return Ok(total);
        }
    }
}

/// Tells inserting transactions whether to notify (the relay's leader calls
/// it). Setting the flag then waits, on the exclusive side of the wake lock,
/// for every inserting transaction that may have read it unset (migration 2005).
pub async fn set_idle(conn: &mut PgConnection, idle: bool) -> sqlx::Result<()> {
    sqlx::query!("UPDATE commands.relay_wake SET idle = $1", idle)
        .execute(&mut *conn)
        .await?;
    if idle {
        sqlx::query!("SELECT pg_advisory_xact_lock($1)", WAKE_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Rows not yet published, and the age in seconds of the oldest.
pub async fn backlog(conn: &mut PgConnection) -> sqlx::Result<(i64, f64)> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "count!", EXTRACT(EPOCH FROM now() - min(created_at))::float8 AS age
           FROM commands.outbox WHERE published_at IS NULL"#
    )
    .fetch_one(conn)
    .await?;
    Ok((row.count, row.age.unwrap_or(0.0)))
}
