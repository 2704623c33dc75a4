//! The ingest endpoint: upstream systems (the payment provider, the
//! warehouse) publish their events over HTTP instead of straight to Kafka.
//!
//! ```text
//! POST /ingest/{topic}   Content-Type: application/json
//!   {"subject": "payments.payments.events-payments.PaymentCaptured",
//!    "version": 1,                      (optional: the latest when absent)
//!    "key": "<order id>",
//!    "value": { ...the record as JSON... }}
//!
//! POST /ingest/{topic}   Content-Type: application/vnd.confluent.avro (or application/octet-stream)
//!   Kafka-Key: <order id>
//!   <magic byte 0, 4-byte schema id, Avro binary>
//! ```
//!
//! Either way the event is validated against the schema registry (the JSON
//! against the subject's version, the binary against its writer schema, which
//! must be registered under a subject of the topic), then produced with the
//! same framing, key and headers as our own events. `202` answers with where
//! it landed; `400` names the field at fault. Only the upstream topics take
//! events here: `payments.payments.events` and `warehouse.shipments.events`.

use std::{sync::Arc, time::Duration};

use apache_avro::types::Value as Avro;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, header},
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
    routing::post,
};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use serde::{Deserialize, Serialize};
use tributary_platform::{
    auth::{AuthSettings, Guard, Scope, require},
    http::{Problem, RequestContext, parse_json},
};
use tributary_registry::{Error as RegistryError, RegistryClient, WriterSchema};
use tributary_schemas::{Topic, framing};
use uuid::Uuid;

/// Largest event accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What the ingest handlers share.
#[derive(Clone)]
pub struct Ingest {
    registry: RegistryClient,
    producer: FutureProducer,
    topic_prefix: String,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("topic_prefix", &self.topic_prefix)
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// Handlers validating with `registry` and producing with `producer`
    /// (idempotent, `acks=all`) to topics with `topic_prefix`.
    pub fn new(registry: RegistryClient, producer: FutureProducer, topic_prefix: &str) -> Self {
        Self {
            registry,
            producer,
            topic_prefix: topic_prefix.to_owned(),
        }
    }
}

/// `POST /ingest/{topic}`, requiring a token with the `ingest` scope.
pub fn router(ingest: Ingest, auth: Arc<AuthSettings>) -> Router {
    Router::new()
        .route("/ingest/{topic}", post(publish))
        .route_layer(from_fn_with_state(Guard::new(auth, Scope::Ingest), require))
        .with_state(ingest)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// An event as Avro JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    subject: String,
    #[serde(default)]
    version: Option<u32>,
    key: String,
    value: serde_json::Value,
}

/// Where an accepted event landed.
#[derive(Debug, Serialize)]
struct Accepted {
    event_id: Uuid,
    event_type: String,
    topic: String,
    partition: i32,
    offset: i64,
}

async fn publish(
    State(ingest): State<Ingest>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, Problem> {
    let upstream = [Topic::Payments, Topic::Shipments];
    let Some(contract_topic) = upstream.into_iter().find(|t| t.name() == topic) else {
        return Err(Problem::not_found(format!(
            "{topic:?} does not take upstream events; use {} or {}",
            Topic::Payments.name(),
            Topic::Shipments.name()
        )));
    };
    let body = body.map_err(|rejection| {
        Problem::new(
            rejection.status(),
            "Body too large",
            format!("events are limited to {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let deployed = format!("{}{}", ingest.topic_prefix, contract_topic.name());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (key, value, writer) = if content_type.starts_with("application/json") {
        let event: JsonEvent = parse_json(&body)?;
        let (value, writer) = from_json(&ingest, &deployed, &event).await?;
        (event.key, value, writer)
    } else if content_type.starts_with("application/vnd.confluent.avro")
        || content_type.starts_with("application/octet-stream")
    {
        let key = headers
            .get("kafka-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                Problem::invalid_field(
                    "Kafka-Key",
                    "binary events need their key in the Kafka-Key header",
                )
            })?;
        let writer = from_binary(&ingest, &deployed, &body).await?;
        (key, body.to_vec(), writer)
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send application/json (Avro JSON with subject and version) or application/vnd.confluent.avro (framed binary)",
        ));
    };
    if key.is_empty() || key.len() > 256 {
        return Err(Problem::invalid_field(
            "key",
            "must be 1 to 256 bytes: the aggregate id",
        ));
    }
    let accepted = produce(&ingest, &deployed, &key, &value, &writer, &headers).await?;
    metrics::counter!("tributary_ingest_events_total", "topic" => contract_topic.name())
        .increment(1);
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// Validates Avro JSON against the subject's version and encodes it, framed.
async fn from_json(
    ingest: &Ingest,
    topic: &str,
    event: &JsonEvent,
) -> Result<(Vec<u8>, Arc<WriterSchema>), Problem> {
    if !event.subject.starts_with(&format!("{topic}-")) {
        return Err(Problem::invalid_field(
            "subject",
            format!("must be {topic}-<record full name>"),
        ));
    }
    let writer = ingest
        .registry
        .subject_version(&event.subject, event.version)
        .await
        .map_err(|error| {
            registry_problem(
                error,
                "subject",
                "the subject (or that version of it) is not registered",
            )
        })?;
    let value = Avro::try_from(event.value.clone())
        .and_then(|value| value.resolve(&writer.schema))
        .map_err(|error| {
            Problem::invalid_field(
                "value",
                format!(
                    "does not match {} v{:?}: {error}",
                    event.subject, event.version
                ),
            )
        })?;
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&writer.schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|error| Problem::invalid_field("value", error.to_string()))?;
    Ok((framing::frame(writer.id, &datum), writer))
}

/// Validates a framed binary event: its schema is registered for the topic and the datum decodes.
async fn from_binary(
    ingest: &Ingest,
    topic: &str,
    body: &[u8],
) -> Result<Arc<WriterSchema>, Problem> {
    let (id, mut datum) =
        framing::split(body).map_err(|error| Problem::invalid_field("body", error.to_string()))?;
    let writer = ingest.registry.schema_by_id(id).await.map_err(|error| {
        registry_problem(
            error,
            "body",
            &format!("schema id {id} is not in the registry"),
        )
    })?;
    let expected = tributary_schemas::subject(topic, &writer.full_name);
    let subjects = ingest
        .registry
        .subjects_of(id)
        .await
        .map_err(|e| registry_problem(e, "body", "schema id unknown"))?;
    if !subjects.iter().any(|(subject, _)| *subject == expected) {
        return Err(Problem::invalid_field(
            "body",
            format!("schema id {id} is not registered under {expected}"),
        ));
    }
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&writer.schema)
        .build()
        .map_err(|error| Problem::internal(&error.into()))?;
    reader.read_value(&mut datum).map_err(|error| {
        Problem::invalid_field("body", format!("does not decode with schema {id}: {error}"))
    })?;
    if !datum.is_empty() {
        return Err(Problem::invalid_field(
            "body",
            format!("{} bytes left after the record", datum.len()),
        ));
    }
    Ok(writer)
}

fn registry_problem(error: RegistryError, field: &str, not_found: &str) -> Problem {
    match &error {
        RegistryError::Registry { status: 404, .. } => Problem::invalid_field(field, not_found),
        _ => {
            tracing::warn!(error = %error, "schema registry unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Registry unavailable",
                "the schema registry cannot be reached; retry",
            )
        }
    }
}

/// Produces with the headers every event carries, and waits for the broker.
async fn produce(
    ingest: &Ingest,
    topic: &str,
    key: &str,
    value: &[u8],
    writer: &WriterSchema,
    headers: &HeaderMap,
) -> Result<Accepted, Problem> {
    let context = RequestContext::from_headers(headers);
    let event_id = Uuid::now_v7();
    let occurred_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (event_id_text, request_id, correlation_id) = (
        event_id.to_string(),
        context.request_id.to_string(),
        context.correlation_id.to_string(),
    );
    let kafka_headers = [
        ("event_id", event_id_text.as_str()),
        ("event_type", writer.full_name.as_str()),
        ("occurred_at", occurred_at.as_str()),
        ("correlation_id", correlation_id.as_str()),
        ("causation_id", request_id.as_str()),
        ("producer", "tributary-ingest"),
        ("traceparent", context.traceparent.as_str()),
    ]
    .into_iter()
    .fold(OwnedHeaders::new_with_capacity(7), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    });
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(kafka_headers);
    let (partition, offset) = ingest
        .producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|delivery| (delivery.partition, delivery.offset))
        .map_err(|(error, _)| {
            tracing::warn!(error = %error, "ingest could not produce");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Kafka unavailable",
                "the event could not be published; retry",
            )
        })?;
    Ok(Accepted {
        event_id,
        event_type: writer.full_name.clone(),
        topic: topic.to_owned(),
        partition,
        offset,
    })
}
