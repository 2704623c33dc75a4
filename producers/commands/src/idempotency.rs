//! Commands run in one transaction, optionally under an idempotency key: the
//! first successful response is stored in the same transaction and replayed
//! to retries; the same key with another request is refused.

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{PgConnection, PgPool};

use crate::CommandError;

/// An `Idempotency-Key` header and the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: String,
    request: Vec<u8>,
}

impl IdempotencyKey {
    /// Longest key accepted.
    pub const MAX_LEN: usize = 255;

    /// Validates the key; `request` identifies the command (method, path, canonical body).
    pub fn parse(key: &str, request: Vec<u8>) -> Result<Self, String> {
        if key.is_empty() || key.len() > Self::MAX_LEN || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "must be 1 to {} visible ASCII characters",
                Self::MAX_LEN
            ));
        }
        Ok(Self {
            key: key.to_owned(),
            request,
        })
    }
}

/// A command's result, and whether it is the replay of an earlier response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done<T> {
    /// The response.
    pub value: T,
    /// True when an earlier request with the same key produced it.
    pub replayed: bool,
}

/// Runs a command made of one statement: without a key, on a pooled
/// connection with no explicit transaction (one statement is atomic on its
/// own, and BEGIN/COMMIT would cost two more round trips); with a key, as
/// [`run`] does.
pub(crate) async fn run_statement<T, C>(
    pool: &PgPool,
    key: Option<&IdempotencyKey>,
    command: C,
) -> Result<Done<T>, CommandError>
where
    T: Serialize + DeserializeOwned,
    C: AsyncFnOnce(&mut PgConnection) -> Result<T, CommandError>,
{
    if key.is_some() {
        return run(pool, key, command).await;
    }
    let mut conn = pool.acquire().await?;
    Ok(Done {
        value: command(&mut conn).await?,
        replayed: false,
    })
}

/// Runs `command` in one transaction on `pool`, under `key` when given.
pub(crate) async fn run<T, C>(
    pool: &PgPool,
    key: Option<&IdempotencyKey>,
    command: C,
) -> Result<Done<T>, CommandError>
where
    T: Serialize + DeserializeOwned,
    C: AsyncFnOnce(&mut PgConnection) -> Result<T, CommandError>,
{
    let mut tx = pool.begin().await?;
    if let Some(key) = key
        && let Some(replay) = claim(&mut tx, key).await?
    {
        return Ok(Done {
            value: replay,
            replayed: true,
        });
    }
    let value = command(&mut tx).await?;
    if let Some(key) = key {
        let response = serde_json::to_value(&value).map_err(anyhow::Error::from)?;
        sqlx::query!(
            "UPDATE commands.idempotency_keys SET response = $2 WHERE key = $1",
            &key.key,
            response
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Done {
        value,
        replayed: false,
    })
}

/// Claims the key for this transaction, or returns the stored response. A
/// concurrent transaction holding the same key makes the insert wait until it
/// commits (then we replay) or rolls back (then we run).
async fn claim<T: DeserializeOwned>(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
) -> Result<Option<T>, CommandError> {
    let claimed = sqlx::query!(
        "INSERT INTO commands.idempotency_keys (key, request_hash) VALUES ($1, sha256($2))
         ON CONFLICT (key) DO NOTHING",
        &key.key,
        &key.request
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let row = sqlx::query!(
        r#"SELECT request_hash = sha256($2) AS "same_request!", response
           FROM commands.idempotency_keys WHERE key = $1"#,
        key.key,
        key.request,
    )
    .fetch_one(&mut *conn)
    .await?;
    let (same_request, response) = (row.same_request, row.response);
    if !same_request {
        return Err(CommandError::IdempotencyKeyReused);
    }
    let response =
        response.ok_or_else(|| anyhow::anyhow!("idempotency key {} has no response", key.key))?;
    Ok(Some(
        serde_json::from_value(response).map_err(anyhow::Error::from)?,
    ))
}
