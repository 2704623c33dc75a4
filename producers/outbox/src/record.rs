//! Outbox records: an event encoded exactly as it will travel on Kafka,
//! written in the same transaction as the state change that caused it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use tributary_schemas::{Event, framing};
use uuid::Uuid;

/// Where an event type goes: its deployed topic and its registry schema id.
#[derive(Debug, Clone)]
pub struct Route {
    /// The deployed topic name (with any prefix).
    pub topic: String,
    /// The id of the event's current schema in the registry.
    pub schema_id: u32,
}

impl Route {
    /// The route of event type `E`: its topic with `topic_prefix`, its id in `ids`.
    pub fn of<E: Event>(
        ids: &tributary_registry::ContractIds,
        topic_prefix: &str,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            topic: format!("{topic_prefix}{}", E::TOPIC.name()),
            schema_id: ids
                .id_of(E::FULL_NAME)
                .ok_or_else(|| anyhow::anyhow!("no registered schema for {}", E::FULL_NAME))?,
        })
    }
}

/// Context every event carries in its headers.
#[derive(Debug, Clone)]
pub struct Causation {
    /// Ties together everything that follows from one outside request.
    pub correlation_id: Uuid,
    /// The command (or event) that caused this event.
    pub causation_id: Uuid,
    /// W3C trace context of the event (continuing the request's trace, if any).
    pub traceparent: Option<String>,
    /// The role that produced the event (`tributary-api`).
    pub producer: &'static str,
}

/// One row of `commands.outbox`.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// Unique per record: the relay's consumers deduplicate on it.
    pub event_id: Uuid,
    /// The deployed topic it is published to.
    pub topic: String,
    /// The Kafka key (the aggregate's id: one aggregate, one partition).
    pub key: String,
    /// The Kafka value, as it will travel.
    pub value: Vec<u8>,
    /// The Kafka headers (values as text).
    pub headers: Map<String, Value>,
}

impl OutboxRecord {
    /// Encodes `event` with the Confluent framing and the standard headers.
    pub fn new<E: Event>(route: &Route, event: &E, causation: &Causation) -> anyhow::Result<Self> {
        let event_id = Uuid::now_v7();
        let occurred_at = DateTime::<Utc>::from_timestamp_millis(event.occurred_at())
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut headers = Map::new();
        headers.insert("event_id".into(), event_id.to_string().into());
        headers.insert("event_type".into(), E::FULL_NAME.into());
        headers.insert("occurred_at".into(), occurred_at.into());
        headers.insert(
            "correlation_id".into(),
            causation.correlation_id.to_string().into(),
        );
        headers.insert(
            "causation_id".into(),
            causation.causation_id.to_string().into(),
        );
        headers.insert("producer".into(), causation.producer.into());
        if let Some(traceparent) = &causation.traceparent {
            headers.insert("traceparent".into(), traceparent.clone().into());
        }
        Ok(Self {
            event_id,
            topic: route.topic.clone(),
            key: event.key().to_owned(),
            value: framing::encode(route.schema_id, event)?,
            headers,
        })
    }

    /// A message as it is (already encoded: a dead letter, a task), for
    /// `topic`, as the outbox's row `event_id` (unique per row). A message
    /// without an `event_id` header gets this one.
    pub fn message(
        event_id: Uuid,
        topic: &str,
        key: &str,
        value: &[u8],
        headers: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut headers: Map<String, Value> = headers
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        headers
            .entry("event_id")
            .or_insert_with(|| event_id.to_string().into());
        Self {
            event_id,
            topic: topic.to_owned(),
            key: key.to_owned(),
            value: value.to_vec(),
            headers,
        }
    }

    /// The headers as the outbox stores them (a JSON object).
    pub fn headers_json(&self) -> Value {
        Value::Object(self.headers.clone())
    }

    /// Appends the record to the outbox inside the caller's transaction.
    pub async fn append(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        crate::outbox_query!(
            "",
            "VALUES ($1, $2, $3, $4, $5)",
            self.event_id,
            self.topic,
            self.key,
            self.value,
            self.headers_json(),
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}
