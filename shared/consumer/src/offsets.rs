//! Offsets stored beside the consumer's work (`consumer.offsets`).

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

/// The stored next offset of every partition `consumer` has applied, by (topic, partition).
pub(crate) async fn load(
    pool: &PgPool,
    consumer: &str,
) -> sqlx::Result<HashMap<(String, i32), i64>> {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM consumer.offsets WHERE consumer = $1",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(topic, partition, next)| ((topic, partition), next))
        .collect())
}

/// Locks the partition's offset row for this transaction and returns the next
/// offset to apply (0 for a partition never seen).
pub(crate) async fn lock(
    conn: &mut PgConnection,
    consumer: &str,
    topic: &str,
    partition: i32,
) -> sqlx::Result<i64> {
    sqlx::query(
        "INSERT INTO consumer.offsets (consumer, topic, partition, next_offset)
         VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(topic)
    .bind(partition)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "SELECT next_offset FROM consumer.offsets
         WHERE consumer = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
    )
    .bind(consumer)
    .bind(topic)
    .bind(partition)
    .fetch_one(conn)
    .await
}

/// Advances the partition's offset inside the batch's transaction.
pub(crate) async fn advance(
    conn: &mut PgConnection,
    consumer: &str,
    topic: &str,
    partition: i32,
    next_offset: i64,
    last_event_at: Option<chrono::DateTime<chrono::Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE consumer.offsets
         SET next_offset = $4, last_event_at = COALESCE($5, last_event_at), updated_at = now()
         WHERE consumer = $1 AND topic = $2 AND partition = $3",
    )
    .bind(consumer)
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .bind(last_event_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The sum of `consumer`'s stored next offsets over `topic`: how many of its
/// messages it has applied or skipped.
pub async fn applied(pool: &PgPool, consumer: &str, topic: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(next_offset), 0)::bigint FROM consumer.offsets WHERE consumer = $1 AND topic = $2",
    )
    .bind(consumer)
    .bind(topic)
    .fetch_one(pool)
    .await
}
