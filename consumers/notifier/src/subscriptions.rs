//! Webhook subscriptions: who wants which events, where, signed with what.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::{events::EVENT_TYPES, webhook::target_refusal};

/// Longest URL accepted.
const MAX_URL: usize = 2048;
/// Shortest and longest secret accepted.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// Longest description accepted.
const MAX_DESCRIPTION: usize = 500;
/// How long a rotated-out secret signs on when the rotation does not say.
pub const DEFAULT_OVERLAP_SECONDS: u32 = 24 * 60 * 60;
/// Longest a rotated-out secret may sign on.
pub const MAX_OVERLAP_SECONDS: u32 = 7 * 24 * 60 * 60;

/// A subscription as stored (its secret is shown once, when it is created).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Subscription {
    pub subscription_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// When the secret was last rotated.
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until when the secret it replaced still signs deliveries too.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// A subscription to create, as the API and the CLI receive it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// Where deliveries are POSTed (`https://…`).
    pub url: String,
    /// Record full names (`shop.orders.OrderPaid`), or `*` for every event.
    pub event_types: Vec<String>,
    /// The signing key; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// A field of a [`NewSubscription`] that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field at fault (`event_types[1]`).
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A secret given by the caller must be of a sensible length.
fn check_secret(secret: Option<&str>) -> Result<(), Invalid> {
    match secret {
        Some(secret) if !SECRET_LEN.contains(&secret.len()) => Err(invalid(
            "secret",
            format!(
                "must be {} to {} characters",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            ),
        )),
        _ => Ok(()),
    }
}

/// A generated secret: `whsec_` and 256 random bits in hex.
fn generated_secret() -> String {
    format!(
        "whsec_{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// A secret rotation, as the API and the CLI receive it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// The new signing key; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// How long the replaced secret signs on beside the new one, so
    /// receivers can switch without refusing a delivery; 0 retires it at
    /// once. [`DEFAULT_OVERLAP_SECONDS`] when absent.
    #[serde(default)]
    pub overlap_seconds: Option<u32>,
}

impl Rotation {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_secret(self.secret.as_deref())?;
        if self.overlap() > MAX_OVERLAP_SECONDS {
            return Err(invalid(
                "overlap_seconds",
                format!("at most {MAX_OVERLAP_SECONDS} (7 days)"),
            ));
        }
        Ok(())
    }

    fn overlap(&self) -> u32 {
        self.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS)
    }
}

impl NewSubscription {
    /// Checks every field; `allow_private` lets the URL name a private address.
    pub fn validate(&self, allow_private: bool) -> Result<(), Invalid> {
        if self.url.len() > MAX_URL {
            return Err(invalid("url", format!("longer than {MAX_URL} characters")));
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| invalid("url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("url", "must be http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "url",
                "must not carry credentials (deliveries are signed)",
            ));
        }
        if let Some(refusal) = target_refusal(&url, allow_private) {
            return Err(invalid("url", refusal));
        }
        if self.event_types.is_empty() {
            return Err(invalid(
                "event_types",
                "name at least one event type, or `*`",
            ));
        }
        for (i, event_type) in self.event_types.iter().enumerate() {
            if event_type != "*" && !EVENT_TYPES.contains(&event_type.as_str()) {
                return Err(invalid(
                    format!("event_types[{i}]"),
                    format!(
                        "unknown event type {event_type:?}; known: *, {}",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
        check_secret(self.secret.as_deref())?;
        if self.description.len() > MAX_DESCRIPTION {
            return Err(invalid(
                "description",
                format!("longer than {MAX_DESCRIPTION} characters"),
            ));
        }
        Ok(())
    }
}

/// Stores `new` (validated by the caller) and returns it with its secret.
pub async fn create(pool: &PgPool, new: &NewSubscription) -> sqlx::Result<(Subscription, String)> {
    let secret = new.secret.clone().unwrap_or_else(generated_secret);
    let mut event_types = new.event_types.clone();
    event_types.sort();
    event_types.dedup();
    let subscription = sqlx::query_as!(
        Subscription,
        "INSERT INTO notifier.subscriptions (subscription_id, url, event_types, secret, description)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING subscription_id, url, event_types, description, created_at,
                   secret_rotated_at, previous_secret_expires_at",
        Uuid::now_v7(),
        new.url,
        &event_types,
        secret,
        new.description,
    )
    .fetch_one(pool)
    .await?;
    Ok((subscription, secret))
}

/// Every subscription, oldest first.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Subscription>> {
    sqlx::query_as!(
        Subscription,
        "SELECT subscription_id, url, event_types, description, created_at,
                secret_rotated_at, previous_secret_expires_at
         FROM notifier.subscriptions ORDER BY subscription_id"
    )
    .fetch_all(db)
    .await
}

/// One subscription.
pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Subscription>> {
    sqlx::query_as!(
        Subscription,
        "SELECT subscription_id, url, event_types, description, created_at,
                secret_rotated_at, previous_secret_expires_at
         FROM notifier.subscriptions WHERE subscription_id = $1",
        id
    )
    .fetch_optional(pool)
    .await
}

/// Gives a subscription a new secret (validated by the caller); the one it
/// replaces signs beside it for the rotation's overlap. A secret replaced
/// earlier and still overlapping stops signing. Returns the subscription
/// and its new secret, `None` when there is no such subscription.
pub async fn rotate(
    pool: &PgPool,
    id: Uuid,
    rotation: &Rotation,
) -> sqlx::Result<Option<(Subscription, String)>> {
    let secret = rotation.secret.clone().unwrap_or_else(generated_secret);
    let rotated: Option<Subscription> = sqlx::query_as!(
        Subscription,
        "UPDATE notifier.subscriptions
         SET previous_secret = CASE WHEN $3::float8 > 0 THEN secret END,
             previous_secret_expires_at = CASE WHEN $3 > 0 THEN now() + make_interval(secs => $3) END,
             secret = $2,
             secret_rotated_at = now()
         WHERE subscription_id = $1
         RETURNING subscription_id, url, event_types, description, created_at,
                   secret_rotated_at, previous_secret_expires_at",
        id,
        secret,
        f64::from(rotation.overlap()),
    )
    .fetch_optional(pool)
    .await?;
    Ok(rotated.map(|subscription| (subscription, secret)))
}

/// Deletes a subscription; deliveries already enqueued for it are dropped
/// when they run. Returns whether it existed.
pub async fn delete(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let deleted = sqlx::query!(
        "DELETE FROM notifier.subscriptions WHERE subscription_id = $1",
        id
    )
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Whether a subscription to `event_types` wants `event_type`.
pub fn wants(event_types: &[String], event_type: &str) -> bool {
    event_types.iter().any(|t| t == "*" || t == event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(url: &str, types: &[&str]) -> NewSubscription {
        NewSubscription {
            url: url.into(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            secret: None,
            description: String::new(),
        }
    }

    fn field(result: Result<(), Invalid>) -> String {
        result.unwrap_err().field
    }

    #[test]
    fn bad_subscriptions_name_the_field() {
        let paid = ["shop.orders.OrderPaid"];
        assert!(
            new("https://hooks.example.com/x", &paid)
                .validate(false)
                .is_ok()
        );
        assert_eq!(field(new("not a url", &paid).validate(false)), "url");
        assert_eq!(
            field(new("ftp://example.com/", &paid).validate(false)),
            "url"
        );
        assert_eq!(
            field(new("https://u:p@example.com/", &paid).validate(false)),
            "url"
        );
        assert_eq!(
            field(new("http://127.0.0.1:9/", &paid).validate(false)),
            "url"
        );
        assert_eq!(field(new("http://[::1]/", &paid).validate(false)), "url");
        assert_eq!(field(new("http://10.1.2.3/", &paid).validate(false)), "url");
        assert_eq!(
            field(new("http://localhost/", &paid).validate(false)),
            "url"
        );
        assert!(new("http://127.0.0.1:9/", &paid).validate(true).is_ok());
        assert_eq!(
            field(new("https://example.com/", &[]).validate(false)),
            "event_types"
        );
        assert_eq!(
            field(new("https://example.com/", &["*", "shop.orders.Nope"]).validate(false)),
            "event_types[1]"
        );
        let mut short = new("https://example.com/", &["*"]);
        short.secret = Some("short".into());
        assert_eq!(field(short.validate(false)), "secret");
    }

    #[test]
    fn bad_rotations_name_the_field() {
        assert!(Rotation::default().validate().is_ok());
        let short = Rotation {
            secret: Some("short".into()),
            ..Rotation::default()
        };
        assert_eq!(field(short.validate()), "secret");
        let long = Rotation {
            overlap_seconds: Some(MAX_OVERLAP_SECONDS + 1),
            ..Rotation::default()
        };
        assert_eq!(field(long.validate()), "overlap_seconds");
        let none = Rotation {
            overlap_seconds: Some(0),
            ..Rotation::default()
        };
        assert!(none.validate().is_ok());
    }

    #[test]
    fn a_star_wants_everything() {
        assert!(wants(&["*".into()], "shop.orders.OrderPaid"));
        assert!(wants(
            &["shop.orders.OrderPaid".into()],
            "shop.orders.OrderPaid"
        ));
        assert!(!wants(
            &["shop.orders.OrderPaid".into()],
            "shop.orders.OrderPlaced"
        ));
    }
}
