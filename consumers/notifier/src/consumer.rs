//! The notifier's consumer: each event becomes its deliveries, enqueued in
//! the transaction that stores the consumer's offset.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde_json::json;
use sqlx::PgConnection;
use tributary_consumer::{AvroDecoder, DecodeError, Envelope, Handler};
use tributary_schemas::orders::OrderEvent;
use tributary_tasks::{Enqueue, Enqueuer, Priority};
use uuid::Uuid;

use crate::{
    EventKind, Reaction, ShopEvent, WebhookSettings,
    email::{self, EmailArgs},
    subscriptions::wants,
    webhook::{DeliverWebhook, WebhookDelivery},
};

/// The notifier's [`Handler`].
pub struct Notifier {
    avro: AvroDecoder,
    enqueuer: Enqueuer,
    webhooks: WebhookSettings,
    /// Attempts per e-mail; `None` when no SMTP server is configured.
    email_attempts: Option<u32>,
    reactions: Vec<Arc<dyn Reaction>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier enqueueing through `enqueuer` (whose catalog holds the
    /// notifier's tasks). `email_attempts` is `None` when e-mails are off.
    pub fn new(
        avro: AvroDecoder,
        enqueuer: Enqueuer,
        webhooks: WebhookSettings,
        email_attempts: Option<u32>,
        reactions: Vec<Arc<dyn Reaction>>,
    ) -> Self {
        Self {
            avro,
            enqueuer,
            webhooks,
            email_attempts,
            reactions,
        }
    }

    /// The e-mail an event sends its customer, if any.
    async fn customer_email(
        &self,
        conn: &mut PgConnection,
        event: &ShopEvent,
    ) -> anyhow::Result<Option<EmailArgs>> {
        let EventKind::Order(order) = &event.kind else {
            return Ok(None);
        };
        let (template, customer_id, context) = match order {
            OrderEvent::Placed(placed) => (
                email::ORDER_CONFIRMATION,
                Uuid::parse_str(&placed.customer_id)?,
                json!({
                    "order_id": placed.order_id,
                    "currency": placed.currency,
                    "total_minor": placed.total_minor,
                    "lines": placed.lines,
                }),
            ),
            OrderEvent::Shipped(shipped) => {
                let customer: Option<Uuid> = sqlx::query_scalar!(
                    "SELECT customer_id FROM notifier.order_customers WHERE order_id = $1",
                    Uuid::parse_str(&shipped.order_id)?
                )
                .fetch_optional(&mut *conn)
                .await?;
                let Some(customer_id) = customer else {
                    tracing::warn!(
                        order_id = shipped.order_id,
                        "an order shipped whose placement the notifier never saw: no e-mail"
                    );
                    return Ok(None);
                };
                (
                    email::ORDER_SHIPPED,
                    customer_id,
                    json!({
                        "order_id": shipped.order_id,
                        "carrier": shipped.carrier,
                        "shipment_id": shipped.shipment_id,
                    }),
                )
            }
            _ => return Ok(None),
        };
        Ok(Some(EmailArgs {
            template: template.to_owned(),
            to_address: None,
            to_customer: Some(customer_id.to_string()),
            key: event.event_id.to_string(),
            context: context.to_string(),
        }))
    }
}

impl Handler for Notifier {
    type Event = ShopEvent;

    fn name(&self) -> &str {
        "notifier"
    }

    async fn decode(&self, message: &OwnedMessage) -> Result<Option<ShopEvent>, DecodeError> {
        let Some(decoded) = self.avro.decode::<EventKind>(message.payload()).await? else {
            return Ok(None);
        };
        let event_id = message
            .headers()
            .and_then(|headers| headers.iter().find(|h| h.key == "event_id"))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| Uuid::parse_str(v).ok())
            .ok_or_else(|| DecodeError::BadInput("no event_id header holding a UUID".into()))?;
        let kind = decoded.value;
        let occurred_at = DateTime::from_timestamp_millis(kind.occurred_at_millis())
            .ok_or_else(|| DecodeError::BadInput("occurred_at is out of range".into()))?;
        Ok(Some(ShopEvent {
            event_id,
            occurred_at,
            kind,
        }))
    }

    fn occurred_at(&self, event: &ShopEvent) -> Option<DateTime<Utc>> {
        Some(event.occurred_at)
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: Vec<Envelope<ShopEvent>>,
    ) -> anyhow::Result<()> {
        let subscriptions: Vec<(Uuid, Vec<String>)> =
            sqlx::query!("SELECT subscription_id, event_types FROM notifier.subscriptions")
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|r| (r.subscription_id, r.event_types))
                .collect();
        for Envelope { event, .. } in events {
            let mut tasks = Vec::new();
            match &event.kind {
                EventKind::Customer(customer) => {
                    sqlx::query!(
        "INSERT INTO notifier.recipients (customer_id, email, name) VALUES ($1, $2, $3)
                         ON CONFLICT (customer_id) DO UPDATE
                         SET email = EXCLUDED.email, name = EXCLUDED.name, updated_at = now()",
        Uuid::parse_str(&customer.customer_id)?,
        &customer.email,
        &customer.name
    )
                    .execute(&mut *conn)
                    .await?;
                }
                EventKind::Order(OrderEvent::Placed(placed)) => {
                    sqlx::query!(
        "INSERT INTO notifier.order_customers (order_id, customer_id) VALUES ($1, $2)
                         ON CONFLICT (order_id) DO NOTHING",
        Uuid::parse_str(&placed.order_id)?,
        Uuid::parse_str(&placed.customer_id)?
    )
                    .execute(&mut *conn)
                    .await?;
                }
                EventKind::Order(_) => {}
            }
            if let Some(attempts) = self.email_attempts
                && let Some(args) = self.customer_email(conn, &event).await?
            {
                tasks.push(
                    Enqueue::new::<email::SendEmail>(&args)?
                        .priority(Priority::High)
                        .max_attempts(attempts),
                );
            }
            let event_type = event.kind.event_type();
            let mut body = None;
            for (subscription_id, event_types) in &subscriptions {
                if !wants(event_types, event_type) {
                    continue;
                }
                let body = body.get_or_insert_with(|| event.webhook_body());
                let delivery = WebhookDelivery {
                    subscription_id: subscription_id.to_string(),
                    event_id: event.event_id.to_string(),
                    event_type: event_type.to_owned(),
                    body: body.clone(),
                };
                tasks.push(
                    Enqueue::new::<DeliverWebhook>(&delivery)?
                        .priority(Priority::High)
                        .max_attempts(self.webhooks.max_attempts)
                        // The request's own timeout ends an attempt first.
                        .time_limit(self.webhooks.timeout * 2),
                );
            }
            for reaction in &self.reactions {
                tasks.extend(reaction.react(&event)?);
            }
            for task in &tasks {
                self.enqueuer.enqueue_in(conn, task).await?;
            }
        }
        Ok(())
    }
}
