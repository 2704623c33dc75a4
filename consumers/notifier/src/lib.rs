//! The notifier: the side effects of the shop's events.
//!
//! - Its consumer group (`tributary-notifier`, [`Notifier`]) reads the order
//!   and customer events and, in the same transaction as its offsets, turns
//!   each into the deliveries it calls for: a signed webhook per matching
//!   subscription ([`webhook`]), the customer's e-mail for an order placed
//!   or shipped ([`email`]), and whatever else a [`Reaction`] asks for (the
//!   shop's invoice). So an event's deliveries are enqueued exactly once.
//! - Each delivery is a task ([`webhook::DeliverWebhook`],
//!   [`email::SendEmail`]) run by the task worker: timeouts, retries with
//!   exponential backoff and jitter through the durable delay topics, the
//!   dead-letter topic after the last attempt, `ctl dlq redrive`.
//! - Side effects are at-least-once with dedupe: every delivery carries the
//!   event id as its idempotency key, and a delivery that succeeded is
//!   recorded (`notifier.deliveries`) so a re-run does not repeat it.
//! - Subscriptions are managed through `/webhooks/subscriptions` (scope
//!   `admin`) and `tributary ctl webhook` ([`subscriptions`], [`api`]).

pub mod api;
mod consumer;
mod deliveries;
pub mod email;
mod events;
pub mod subscriptions;
pub mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tributary_consumer::ConsumerSettings;
use tributary_platform::Secret;
use tributary_tasks::Enqueue;

pub use consumer::Notifier;
pub use events::{EVENT_TYPES, EventKind, ShopEvent};

/// The notifier's tables (`notifier` schema).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The notifier's consumer group unless `notifier.consumer.group_id` says otherwise.
pub const GROUP: &str = "tributary-notifier";

/// Something else an event should set off, enqueued with the notifier's
/// deliveries in the same transaction (the shop's invoice on `OrderPaid`).
pub trait Reaction: Send + Sync + 'static {
    /// The tasks `event` asks for.
    fn react(&self, event: &ShopEvent) -> anyhow::Result<Vec<Enqueue>>;
}

/// Settings of the notifier.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierSettings {
    /// Its consumer (group `tributary-notifier` unless set).
    pub consumer: ConsumerSettings,
    /// Webhook deliveries.
    pub webhooks: WebhookSettings,
    /// E-mails.
    pub email: EmailSettings,
}

/// Settings of webhook deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// How long one delivery may take, connecting included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per delivery before it is dead-lettered.
    pub max_attempts: u32,
    /// Most bytes of a receiver's answer read (the rest is dropped).
    pub max_response_bytes: usize,
    /// Deliver to loopback, private and link-local addresses too (tests, a
    /// cluster-internal receiver). Off by default: subscribers choose the
    /// URLs, and they must not reach inside the network (SSRF).
    pub allow_private_targets: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            max_response_bytes: 64 * 1024,
            allow_private_targets: false,
        }
    }
}

/// Settings of e-mails.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailSettings {
    /// The SMTP server: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS) or `smtps://user:password@host` (TLS). Unset: no e-mails.
    pub smtp_url: Option<Secret>,
    /// The sender (`Shop <shop@example.com>`).
    pub from: String,
    /// Where the daily sales report goes.
    pub reports_to: Vec<String>,
    /// How long one SMTP conversation may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per e-mail before it is dead-lettered.
    pub max_attempts: u32,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "Tributary Shop <shop@tributary.invalid>".to_owned(),
            reports_to: Vec::new(),
            timeout: Duration::from_secs(30),
            max_attempts: 8,
        }
    }
}
