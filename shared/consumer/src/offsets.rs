//! Offsets stored beside the consumer's work (`consumer.offsets`), owned
//! here: the runtime's reads and writes, and what a projection rebuild
//! needs to hand a replay's offsets over to the live consumer.

use std::collections::HashMap;

use sqlx::{PgConnection, PgExecutor};

/// The stored next offset of every partition `consumer` has applied, by (topic, partition).
pub async fn load(
    db: impl PgExecutor<'_>,
    consumer: &str,
) -> sqlx::Result<HashMap<(String, i32), i64>> {
    let rows = sqlx::query!(
        "SELECT topic, partition, next_offset FROM consumer.offsets WHERE consumer = $1",
        consumer
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.topic, row.partition), row.next_offset))
        .collect())
}

/// Locks every stored offset of `consumer` for this transaction (the live
/// consumer's next batch waits) and returns them.
pub async fn lock_all(
    conn: &mut PgConnection,
    consumer: &str,
) -> sqlx::Result<Vec<(String, i32, i64)>> {
    let rows = sqlx::query!(
        "SELECT topic, partition, next_offset FROM consumer.offsets WHERE consumer = $1 FOR UPDATE",
        consumer
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.topic, row.partition, row.next_offset))
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
    sqlx::query!(
        "INSERT INTO consumer.offsets (consumer, topic, partition, next_offset)
         VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
        consumer,
        topic,
        partition,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        "SELECT next_offset FROM consumer.offsets
         WHERE consumer = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
        consumer,
        topic,
        partition,
    )
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
    sqlx::query!(
        "UPDATE consumer.offsets
         SET next_offset = $4, last_event_at = COALESCE($5, last_event_at), updated_at = now()
         WHERE consumer = $1 AND topic = $2 AND partition = $3",
        consumer,
        topic,
        partition,
        next_offset,
        last_event_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The sum of `consumer`'s stored next offsets over `topic`: how many of its
/// messages it has applied or skipped.
pub async fn applied(db: impl PgExecutor<'_>, consumer: &str, topic: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(next_offset), 0)::bigint AS "applied!"
           FROM consumer.offsets WHERE consumer = $1 AND topic = $2"#,
        consumer,
        topic,
    )
    .fetch_one(db)
    .await
}

/// The sum of `consumer`'s stored next offsets over every topic.
pub async fn applied_total(db: impl PgExecutor<'_>, consumer: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(next_offset), 0)::bigint AS "applied!"
           FROM consumer.offsets WHERE consumer = $1"#,
        consumer
    )
    .fetch_one(db)
    .await
}

/// Inside the caller's transaction: `to`'s offsets become `from`'s (row by
/// row, upserted), and `from`'s are deleted. Returns the sum of the offsets
/// handed over (messages applied or skipped).
pub async fn hand_over(conn: &mut PgConnection, from: &str, to: &str) -> sqlx::Result<i64> {
    sqlx::query!(
        "INSERT INTO consumer.offsets (consumer, topic, partition, next_offset, last_event_at, updated_at)
         SELECT $1, topic, partition, next_offset, last_event_at, now()
         FROM consumer.offsets WHERE consumer = $2
         ON CONFLICT (consumer, topic, partition) DO UPDATE SET
             next_offset = excluded.next_offset,
             last_event_at = excluded.last_event_at,
             updated_at = now()",
        to,
        from,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        r#"WITH gone AS (DELETE FROM consumer.offsets WHERE consumer = $1 RETURNING next_offset)
           SELECT COALESCE(sum(next_offset), 0)::bigint AS "applied!" FROM gone"#,
        from
    )
    .fetch_one(conn)
    .await
}

/// Deletes every stored offset of `consumer`.
pub async fn forget(conn: &mut PgConnection, consumer: &str) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM consumer.offsets WHERE consumer = $1", consumer)
        .execute(conn)
        .await?;
    Ok(())
}
