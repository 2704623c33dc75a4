//! The process manager: turns what the payment provider and the warehouse
//! publish into transitions of our orders, so the order's own event stream
//! stays the single source of truth for its state.
//!
//! | upstream event | order transition |
//! |---|---|
//! | `PaymentCaptured` | placed → paid (`OrderPaid`), if amount and currency match |
//! | `ShipmentDispatched` | paid → shipped (`OrderShipped`) |
//! | `ShipmentDelivered` | shipped → delivered (`OrderDelivered`) |
//! | `RefundIssued` | paid, shipped or delivered → refunded (`OrderRefunded`), if the amount fits |
//! | `PaymentFailed` | none (the order stays placed) |
//!
//! Each batch's transitions, their events (in the outbox) and the consumed
//! offsets commit in one transaction: effectively-once. An event that does
//! not apply (unknown or cancelled order, amount or currency mismatch, a
//! transition the state machine refuses) goes to `<group>.dlq`, through the
//! outbox in the same transaction, with the reason; never silently dropped.
//! A repeated event whose transition already happened changes nothing.
//!
//! The orders are the command side's: this role moves them only through
//! `tributary-commands`' public state machine ([`transition`]), which
//! writes the order and its event (through the outbox) together.

use chrono::{DateTime, Utc};
use rdkafka::message::{Headers, Message, OwnedMessage};
use sqlx::PgConnection;
use tributary_consumer::{AvroDecoder, DecodeError, Envelope, Handler, dead_letter};
use tributary_outbox::{Causation, OutboxRecord};
use tributary_schemas::{
    orders::{OrderDelivered, OrderPaid, OrderRefunded, OrderShipped},
    upstream::UpstreamEvent,
};
use uuid::Uuid;

use tributary_commands::{
    CommandError, Current, Orders,
    domain::{Invalid, OrderStatus},
    now_millis, order_exists, transition,
};

/// The default consumer group (and dead-letter topic prefix).
pub const GROUP: &str = "tributary-process-manager";

const PRODUCER: &str = "tributary-process-manager";

/// An upstream event with what a dead letter or a caused event needs.
#[derive(Debug, Clone)]
pub struct Upstream {
    event: UpstreamEvent,
    key: String,
    value: Vec<u8>,
    schema_id: u32,
    event_id: Option<Uuid>,
    correlation_id: Option<Uuid>,
    traceparent: Option<String>,
    /// Every header, as text: a dead letter carries them on.
    headers: Vec<(String, String)>,
}

/// Applies upstream events to orders.
#[derive(Debug)]
pub struct ProcessManager {
    orders: Orders,
    avro: AvroDecoder,
    group: String,
    dead_letters: String,
}

impl ProcessManager {
    /// A process manager writing through `orders`, in consumer group
    /// `group`, dead-lettering to `dead_letters`.
    pub fn new(orders: Orders, avro: AvroDecoder, group: String, dead_letters: String) -> Self {
        Self {
            group,
            orders,
            avro,
            dead_letters,
        }
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: Envelope<Upstream>,
    ) -> anyhow::Result<()> {
        let upstream = &envelope.event;
        let outcome = match Uuid::parse_str(upstream.event.order_id()) {
            Ok(order_id) => self.apply_one(conn, order_id, upstream).await,
            Err(_) => Err(CommandError::Invalid(Invalid {
                field: "order_id".into(),
                reason: format!("{:?} is not a UUID", upstream.event.order_id()),
            })),
        };
        let result = match outcome {
            Ok(()) => "applied",
            Err(CommandError::IllegalTransition {
                current, wanted, ..
            }) if current == wanted => "duplicate",
            Err(CommandError::Internal(error)) => return Err(error),
            Err(refused) => {
                let reason = refused.to_string();
                tracing::warn!(
                    topic = %envelope.topic, partition = envelope.partition, offset = envelope.offset,
                    error = %reason, "upstream event does not apply; dead-lettered"
                );
                let headers = dead_letter::headers(
                    &upstream.headers,
                    (&envelope.topic, envelope.partition, envelope.offset),
                    &reason,
                    Some(upstream.schema_id),
                    &self.group,
                );
                OutboxRecord::message(
                    Uuid::now_v7(),
                    &self.dead_letters,
                    &upstream.key,
                    &upstream.value,
                    headers,
                )
                .append(conn)
                .await?;
                "dead_lettered"
            }
        };
        metrics::counter!("tributary_process_manager_events_total", "result" => result)
            .increment(1);
        Ok(())
    }

    async fn apply_one(
        &self,
        conn: &mut PgConnection,
        order_id: Uuid,
        upstream: &Upstream,
    ) -> Result<(), CommandError> {
        let causation = Causation {
            correlation_id: upstream
                .correlation_id
                .or(upstream.event_id)
                .unwrap_or_else(Uuid::now_v7),
            causation_id: upstream.event_id.unwrap_or_else(Uuid::now_v7),
            traceparent: Some(tributary_platform::http::traceparent(
                upstream.traceparent.as_deref(),
            )),
            producer: PRODUCER,
        };
        let now = now_millis();
        let id = order_id.to_string();
        let orders = &self.orders;
        match &upstream.event {
            UpstreamEvent::PaymentCaptured(p) => {
                let event = OrderPaid {
                    order_id: id,
                    payment_id: p.payment_id.clone(),
                    amount_minor: p.amount_minor,
                    currency: p.currency.clone(),
                    paid_at: p.captured_at,
                };
                let record = OutboxRecord::new(&orders.paid, &event, &causation)?;
                let check = |order: &Current| {
                    amount_matches(
                        order,
                        &p.currency,
                        |total| p.amount_minor == total,
                        "equal the order total",
                    )
                };
                transition(conn, order_id, OrderStatus::Paid, None, check, &record, now).await?;
            }
            UpstreamEvent::RefundIssued(r) => {
                let event = OrderRefunded {
                    order_id: id,
                    refund_id: r.refund_id.clone(),
                    amount_minor: r.amount_minor,
                    currency: r.currency.clone(),
                    refunded_at: r.issued_at,
                };
                let record = OutboxRecord::new(&orders.refunded, &event, &causation)?;
                let fits = |total| (1..=total).contains(&r.amount_minor);
                let check = |order: &Current| {
                    amount_matches(order, &r.currency, fits, "be between 1 and the order total")
                };
                transition(
                    conn,
                    order_id,
                    OrderStatus::Refunded,
                    None,
                    check,
                    &record,
                    now,
                )
                .await?;
            }
            UpstreamEvent::ShipmentDispatched(s) => {
                let event = OrderShipped {
                    order_id: id,
                    shipment_id: s.shipment_id.clone(),
                    carrier: s.carrier.clone(),
                    shipped_at: s.dispatched_at,
                };
                let record = OutboxRecord::new(&orders.shipped, &event, &causation)?;
                transition(
                    conn,
                    order_id,
                    OrderStatus::Shipped,
                    None,
                    |_| Ok(()),
                    &record,
                    now,
                )
                .await?;
            }
            UpstreamEvent::ShipmentDelivered(d) => {
                let event = OrderDelivered {
                    order_id: id,
                    shipment_id: d.shipment_id.clone(),
                    delivered_at: d.delivered_at,
                };
                let record = OutboxRecord::new(&orders.delivered, &event, &causation)?;
                transition(
                    conn,
                    order_id,
                    OrderStatus::Delivered,
                    None,
                    |_| Ok(()),
                    &record,
                    now,
                )
                .await?;
            }
            UpstreamEvent::PaymentFailed(_) => {
                // Nothing changes: the order stays placed. An unknown order is still an error.
                if !order_exists(conn, order_id).await? {
                    return Err(CommandError::NotFound(order_id));
                }
            }
        }
        Ok(())
    }
}

fn amount_matches(
    order: &Current,
    currency: &str,
    fits: impl FnOnce(i64) -> bool,
    rule: &str,
) -> Result<(), CommandError> {
    if currency != order.currency.trim() {
        return Err(CommandError::Invalid(Invalid {
            field: "currency".into(),
            reason: format!(
                "{currency} differs from the order's {}",
                order.currency.trim()
            ),
        }));
    }
    if !fits(order.total_minor) {
        return Err(CommandError::Invalid(Invalid {
            field: "amount_minor".into(),
            reason: format!("must {rule} ({} minor units)", order.total_minor),
        }));
    }
    Ok(())
}

fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl Handler for ProcessManager {
    type Event = Upstream;

    fn name(&self) -> &str {
        "process-manager"
    }

    async fn decode(&self, message: &OwnedMessage) -> Result<Option<Upstream>, DecodeError> {
        let Some(decoded) = self.avro.decode::<UpstreamEvent>(message.payload()).await? else {
            return Ok(None);
        };
        Ok(Some(Upstream {
            event: decoded.value,
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            value: message.payload().unwrap_or_default().to_vec(),
            schema_id: decoded.schema_id,
            event_id: header(message, "event_id").and_then(|v| Uuid::parse_str(v).ok()),
            correlation_id: header(message, "correlation_id").and_then(|v| Uuid::parse_str(v).ok()),
            traceparent: header(message, "traceparent").map(str::to_owned),
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_owned(), value.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    fn occurred_at(&self, event: &Upstream) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(event.event.occurred_at())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: Vec<Envelope<Upstream>>,
    ) -> anyhow::Result<()> {
        for envelope in events {
            self.handle(conn, envelope).await?;
        }
        Ok(())
    }
}
