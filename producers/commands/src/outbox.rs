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
    pub event_id: Uuid,
    pub topic: String,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Map<String, Value>,
}

/// A consumed message as it was, for a dead letter.
#[derive(Debug, Clone, Copy)]
pub struct Original<'a> {
    /// Its key.
    pub key: &'a str,
    /// Its bytes.
    pub value: &'a [u8],
    /// Its headers (values as text).
    pub headers: &'a [(String, String)],
    /// Where it was read: topic, partition, offset.
    pub origin: (&'a str, i32, i64),
    /// The writer schema id of its value, when it had one.
    pub schema_id: Option<u32>,
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

    /// A message that could not be applied, for the dead-letter topic of
    /// consumer group `group`: its key, bytes and headers as they were, with
    /// the headers the consumer runtime's dead letters carry (where it came
    /// from, why, and when), so every dead letter reads and redrives alike.
    pub fn dead_letter(original: &Original<'_>, topic: &str, group: &str, error: &str) -> Self {
        let event_id = Uuid::now_v7();
        let mut headers = Map::new();
        for (name, value) in original.headers {
            if !tributary_consumer::DEAD_LETTER_HEADERS.contains(&name.as_str()) {
                headers.insert(name.clone(), value.clone().into());
            }
        }
        // A message without an event id gets the dead letter's own.
        headers
            .entry("event_id")
            .or_insert_with(|| event_id.to_string().into());
        let (original_topic, partition, offset) = original.origin;
        headers.insert("original_topic".into(), original_topic.into());
        headers.insert("original_partition".into(), partition.to_string().into());
        headers.insert("original_offset".into(), offset.to_string().into());
        headers.insert("error".into(), error.into());
        if let Some(id) = original.schema_id {
            headers.insert("schema_id".into(), id.to_string().into());
        }
        headers.insert("consumer_group".into(), group.into());
        headers.insert(
            "dead_lettered_at".into(),
            Utc::now()
                .to_rfc3339_opts(SecondsFormat::Millis, true)
                .into(),
        );
        Self {
            event_id,
            topic: topic.to_owned(),
            key: original.key.to_owned(),
            value: original.value.to_vec(),
            headers,
        }
    }

    /// Appends the record to the outbox inside the caller's transaction.
    pub async fn append(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        self.bind(sqlx::query(concat!(
            insert_outbox!(),
            " VALUES ($1, $2, $3, $4, $5)"
        )))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Binds the record as parameters `$1` to `$5` of a statement that ends
    /// with [`insert_outbox!`] (so a command can write its state and its
    /// event in one statement).
    pub fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.event_id)
            .bind(&self.topic)
            .bind(&self.key)
            .bind(&self.value)
            .bind(Value::Object(self.headers.clone()))
    }
}

/// `INSERT INTO commands.outbox (...)` as a literal, for `concat!`: the
/// columns [`OutboxRecord::bind`] fills as `$1` to `$5`.
macro_rules! insert_outbox {
    () => {
        "INSERT INTO commands.outbox (event_id, topic, key, value, headers)"
    };
}
pub(crate) use insert_outbox;
