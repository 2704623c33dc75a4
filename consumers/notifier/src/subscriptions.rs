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

/// A subscription as stored (its secret is shown once, when it is created).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Subscription {
    pub subscription_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub created_at: DateTime<Utc>,
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
        if let Some(secret) = &self.secret
            && !SECRET_LEN.contains(&secret.len())
        {
            return Err(invalid(
                "secret",
                format!(
                    "must be {} to {} characters",
                    SECRET_LEN.start(),
                    SECRET_LEN.end()
                ),
            ));
        }
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
    let secret = new.secret.clone().unwrap_or_else(|| {
        format!(
            "whsec_{}{}",
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        )
    });
    let mut event_types = new.event_types.clone();
    event_types.sort();
    event_types.dedup();
    let subscription = sqlx::query_as(
        "INSERT INTO notifier.subscriptions (subscription_id, url, event_types, secret, description)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING subscription_id, url, event_types, description, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(&new.url)
    .bind(&event_types)
    .bind(&secret)
    .bind(&new.description)
    .fetch_one(pool)
    .await?;
    Ok((subscription, secret))
}

/// Every subscription, oldest first.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Subscription>> {
    sqlx::query_as(
        "SELECT subscription_id, url, event_types, description, created_at
         FROM notifier.subscriptions ORDER BY subscription_id",
    )
    .fetch_all(db)
    .await
}

/// One subscription.
pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Subscription>> {
    sqlx::query_as(
        "SELECT subscription_id, url, event_types, description, created_at
         FROM notifier.subscriptions WHERE subscription_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Deletes a subscription; deliveries already enqueued for it are dropped
/// when they run. Returns whether it existed.
pub async fn delete(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM notifier.subscriptions WHERE subscription_id = $1")
        .bind(id)
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
