//! `GET /projections`: how fresh every read model is. Where each projection
//! has got to comes from PostgreSQL (`consumer.offsets`, written with the
//! read models; `projection.rebuilds`); how far the topics reach comes from
//! Kafka's high watermarks. When Kafka does not answer in time, the answer
//! still carries what PostgreSQL knows, with the lag `null`.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use sqlx::PgPool;
use tributary_platform::{http::Problem, kafka::KafkaSettings};
use tributary_projector::{PROJECTIONS, Projection};

use crate::AppState;

/// Reads topics' watermarks. Never subscribes or joins its group.
pub struct Watermarks {
    consumer: BaseConsumer,
    kafka: KafkaSettings,
}

impl std::fmt::Debug for Watermarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermarks")
            .field("topic_prefix", &self.kafka.topic_prefix)
            .finish_non_exhaustive()
    }
}

/// The partitions of a topic: `(partition, low, high)` watermarks.
type Partitions = Vec<(i32, i64, i64)>;

impl Watermarks {
    /// A client of the brokers at `bootstrap`, configured like every consumer
    /// of the deployment (security, properties), with client id `tributary-query`.
    pub fn new(kafka: &KafkaSettings, bootstrap: &str) -> anyhow::Result<Self> {
        let consumer = kafka
            .consumer_config(bootstrap, "tributary-query")
            .create()
            .context("creating the query API's Kafka client")?;
        Ok(Self {
            consumer,
            kafka: kafka.clone(),
        })
    }

    /// The watermarks of every partition of each topic (deployed names),
    /// giving up after `timeout` in all.
    async fn fetch(
        self: &Arc<Self>,
        topics: Vec<String>,
        timeout: Duration,
    ) -> HashMap<String, Result<Partitions, String>> {
        let this = self.clone();
        let wanted = topics.clone();
        let fetched = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            this.drain_events();
            wanted
                .into_iter()
                .map(|topic| {
                    let partitions = this.fetch_topic(&topic, deadline);
                    (topic, partitions)
                })
                .collect::<HashMap<_, _>>()
        });
        // The blocking calls each stop at the deadline; this only guards
        // against a client that does not.
        match tokio::time::timeout(timeout + Duration::from_millis(500), fetched).await {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(panicked)) => every(topics, format!("reading watermarks failed: {panicked}")),
            Err(_) => every(topics, format!("Kafka did not answer within {timeout:?}")),
        }
    }

    fn fetch_topic(&self, topic: &str, deadline: Instant) -> Result<Partitions, String> {
        let left = || {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err("Kafka did not answer in time".to_owned())
            } else {
                Ok(left)
            }
        };
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), left()?)
            .map_err(|e| format!("fetching the metadata of {topic}: {e}"))?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| format!("{topic} is not in the metadata"))?;
        if let Some(error) = found.error() {
            return Err(format!(
                "{topic}: {}",
                rdkafka::types::RDKafkaErrorCode::from(error)
            ));
        }
        found
            .partitions()
            .iter()
            .map(|p| {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(topic, p.id(), left()?)
                    .map_err(|e| format!("fetching the watermarks of {topic}/{}: {e}", p.id()))?;
                Ok((p.id(), low, high))
            })
            .collect()
    }

    /// Serves the client's queued events (errors, logs): it is never polled
    /// otherwise, and its queue must not grow while brokers are down.
    fn drain_events(&self) {
        for _ in 0..1000 {
            if self.consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
    }
}

fn every(topics: Vec<String>, error: String) -> HashMap<String, Result<Partitions, String>> {
    topics
        .into_iter()
        .map(|t| (t, Err(error.clone())))
        .collect()
}

/// The freshness of every projection.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// When this was measured.
    checked_at: DateTime<Utc>,
    projections: Vec<Freshness>,
}

/// The freshness of one projection.
#[derive(Debug, Serialize)]
struct Freshness {
    name: &'static str,
    /// Its tables, in the `read_model` schema.
    tables: &'static [&'static str],
    /// The topics it consumes (deployed names).
    topics: Vec<String>,
    /// `live`, `catching_up`, `rebuilding`, or `unknown` (Kafka did not answer).
    state: &'static str,
    /// The time of the newest event applied.
    last_event_at: Option<DateTime<Utc>>,
    /// Messages on its topics not applied yet; `null` when Kafka did not answer.
    lag_messages: Option<i64>,
    /// Seconds since the newest applied event while messages wait; 0 when none wait.
    lag_seconds: Option<f64>,
    /// The rebuild in progress, if any.
    rebuild: Option<Rebuild>,
    /// Why `lag_messages` is `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka_error: Option<String>,
}

/// A rebuild in progress (`projection.rebuilds`).
#[derive(Debug, Serialize)]
struct Rebuild {
    rebuild_id: i64,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    applied_messages: i64,
    target_messages: i64,
    /// `applied_messages / target_messages`, 0 to 1; `null` while the target is 0.
    progress: Option<f64>,
}

/// `GET /projections`.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Report>, Problem> {
    let topics_of = |p: &Projection| -> Vec<String> {
        p.topics
            .iter()
            .map(|t| state.watermarks.kafka.topic(t.name()))
            .collect()
    };
    let mut all_topics: Vec<String> = PROJECTIONS.iter().flat_map(topics_of).collect();
    all_topics.sort();
    all_topics.dedup();
    let (watermarks, stored) = tokio::join!(
        state.watermarks.fetch(all_topics, state.kafka_timeout),
        postgres_side(&state.pool),
    );
    let stored = stored.map_err(|e| Problem::internal(&e))?;
    let now = Utc::now();
    let projections = PROJECTIONS
        .iter()
        .zip(stored)
        .map(|(projection, stored)| {
            let topics = topics_of(projection);
            let lag = topics.iter().try_fold(0_i64, |lag, topic| {
                let partitions = watermarks
                    .get(topic)
                    .cloned()
                    .unwrap_or_else(|| Err(format!("{topic} was not read")))?;
                Ok::<_, String>(
                    lag + partitions
                        .iter()
                        .map(|(partition, low, high)| {
                            let next = stored
                                .offsets
                                .get(&(topic.clone(), *partition))
                                .copied()
                                .unwrap_or(*low);
                            (high - next.max(*low)).max(0)
                        })
                        .sum::<i64>(),
                )
            });
            let (lag_messages, kafka_error) = match lag {
                Ok(lag) => (Some(lag), None),
                Err(error) => (None, Some(error)),
            };
            let lag_seconds = match lag_messages {
                Some(0) => Some(0.0),
                Some(_) => stored
                    .last_event_at
                    .map(|at| ((now - at).num_milliseconds().max(0) as f64) / 1000.0),
                None => None,
            };
            let state = match (&stored.rebuild, lag_messages) {
                (Some(_), _) => "rebuilding",
                (None, Some(0)) => "live",
                (None, Some(_)) => "catching_up",
                (None, None) => "unknown",
            };
            Freshness {
                name: projection.name,
                tables: projection.tables,
                topics,
                state,
                last_event_at: stored.last_event_at,
                lag_messages,
                lag_seconds,
                rebuild: stored.rebuild,
                kafka_error,
            }
        })
        .collect();
    Ok(Json(Report {
        checked_at: now,
        projections,
    }))
}

/// What PostgreSQL knows of one projection.
#[derive(Debug, Default)]
struct Stored {
    /// Next offset to apply, by (topic, partition).
    offsets: HashMap<(String, i32), i64>,
    last_event_at: Option<DateTime<Utc>>,
    rebuild: Option<Rebuild>,
}

/// [`Stored`] for each of [`PROJECTIONS`], in order.
async fn postgres_side(pool: &PgPool) -> anyhow::Result<Vec<Stored>> {
    let mut all = Vec::with_capacity(PROJECTIONS.len());
    for projection in PROJECTIONS {
        let rows: Vec<(String, i32, i64, Option<DateTime<Utc>>)> = sqlx::query!(
            "SELECT topic, partition, next_offset, last_event_at FROM consumer.offsets WHERE consumer = $1",
            projection.name
        )
        .fetch_all(pool)
        .await
        .context("reading consumer.offsets")?
        .into_iter()
        .map(|r| (r.topic, r.partition, r.next_offset, r.last_event_at))
        .collect();
        let mut rebuild: Option<Rebuild> = sqlx::query_as!(
            Rebuild,
            r#"SELECT rebuild_id, started_at, updated_at, applied_messages, target_messages,
                      NULL::float8 AS progress
               FROM projection.rebuilds WHERE projection = $1 AND finished_at IS NULL"#,
            projection.name
        )
        .fetch_optional(pool)
        .await
        .context("reading projection.rebuilds")?;
        if let Some(rebuild) = &mut rebuild {
            rebuild.progress = (rebuild.target_messages > 0).then(|| {
                (rebuild.applied_messages as f64 / rebuild.target_messages as f64).min(1.0)
            });
        }
        all.push(Stored {
            last_event_at: rows.iter().filter_map(|r| r.3).max(),
            offsets: rows
                .into_iter()
                .map(|(t, p, next, _)| ((t, p), next))
                .collect(),
            rebuild,
        });
    }
    Ok(all)
}
