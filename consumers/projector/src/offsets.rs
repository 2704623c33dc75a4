//! Offsets stored beside the read model.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

/// The stored next offset of each partition of `topic` for `projection`.
pub(crate) async fn load(
    pool: &PgPool,
    projection: &str,
    topic: &str,
) -> sqlx::Result<HashMap<i32, i64>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM read_model.projection_offsets
         WHERE projection = $1 AND topic = $2",
    )
    .bind(projection)
    .bind(topic)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Locks the partition's offset row for this transaction and returns the next
/// offset to apply (0 for a partition never seen).
pub(crate) async fn lock(
    conn: &mut PgConnection,
    projection: &str,
    topic: &str,
    partition: i32,
) -> sqlx::Result<i64> {
    sqlx::query(
        "INSERT INTO read_model.projection_offsets (projection, topic, partition, next_offset)
         VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
    )
    .bind(projection)
    .bind(topic)
    .bind(partition)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "SELECT next_offset FROM read_model.projection_offsets
         WHERE projection = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
    )
    .bind(projection)
    .bind(topic)
    .bind(partition)
    .fetch_one(conn)
    .await
}

/// Advances the partition's offset inside the batch's transaction.
pub(crate) async fn advance(
    conn: &mut PgConnection,
    projection: &str,
    topic: &str,
    partition: i32,
    next_offset: i64,
    last_event_at: Option<chrono::DateTime<chrono::Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE read_model.projection_offsets
         SET next_offset = $4, last_event_at = COALESCE($5, last_event_at), updated_at = now()
         WHERE projection = $1 AND topic = $2 AND partition = $3",
    )
    .bind(projection)
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .bind(last_event_at)
    .execute(conn)
    .await?;
    Ok(())
}
