//! The delivery record (`notifier.deliveries`): which side effects (an
//! e-mail, a webhook call) were made, so a repeated task does not make one
//! twice. The e-mail and webhook tasks read and write it.

use sqlx::PgPool;

/// Whether the side effect (`channel`, `target`, `key`) was already made.
pub(crate) async fn delivered(
    pool: &PgPool,
    channel: &str,
    target: &str,
    key: &str,
) -> anyhow::Result<bool> {
    let found = sqlx::query_scalar!(
        r#"SELECT 1 AS "found!" FROM notifier.deliveries WHERE channel = $1 AND target = $2 AND key = $3"#,
        channel,
        target,
        key,
    )
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

/// Records that the side effect (`channel`, `target`, `key`) was made.
pub(crate) async fn record_delivery(
    pool: &PgPool,
    channel: &str,
    target: &str,
    key: &str,
    attempt: u32,
    status: Option<u16>,
) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO notifier.deliveries (channel, target, key, attempt, status)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        channel,
        target,
        key,
        attempt as i32,
        status.map(i32::from),
    )
    .execute(pool)
    .await?;
    Ok(())
}
