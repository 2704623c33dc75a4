//! A whole rebuild, as `tributary ctl projection rebuild` and an admin HTTP
//! handler run it: replay a projection from the earliest offset into fresh
//! tables while the current ones keep serving, then swap them in atomically
//! ([`Rebuild`] does each step).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tributary_consumer::{ConsumerSettings, Wiring};
use tributary_platform::kafka::KafkaSettings;

use super::Rebuild;
use crate::{Decoder, OrdersProjection, PROJECTIONS, Projector};

/// How long the swap waits, with the live projector held, for the rebuild
/// to reach the live projection's offsets.
const CATCH_UP: Duration = Duration::from_secs(60);

/// What a rebuild needs from the deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The database holding `read_model`.
    pub pool: PgPool,
    /// The decoder of the order events.
    pub decoder: Decoder,
    /// The Kafka settings (topic prefix, client settings).
    pub kafka: KafkaSettings,
    /// The brokers.
    pub bootstrap_servers: String,
    /// The live projector's consumer group; the rebuild's is `<group>.rebuild-<id>`.
    pub live_group: String,
    /// The projector's consumer settings, which the rebuild's consumer uses too.
    pub settings: ConsumerSettings,
}

/// Where a rebuild is.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// `replaying`.
    pub phase: &'static str,
    /// Messages replayed so far.
    pub applied: i64,
    /// Messages to replay: the topics' high watermarks when the rebuild started.
    pub target: i64,
    /// Messages per second since the start.
    pub rate: f64,
}

impl Progress {
    /// How far the replay is, in percent of the target.
    pub fn percent(&self) -> f64 {
        if self.target == 0 {
            100.0
        } else {
            100.0 * self.applied as f64 / self.target as f64
        }
    }
}

/// A finished rebuild.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `swapped`.
    pub phase: &'static str,
    /// Its id in `projection.rebuilds`.
    pub rebuild_id: i64,
    /// Messages the rebuilt tables hold, as offsets handed to the live projection.
    pub applied: i64,
    /// From start to swap.
    pub seconds: f64,
}

/// Rebuilds projection `name`, calling `report` about once a second while
/// it replays. On failure the fresh tables are dropped and the live ones
/// are left as they were.
pub async fn rebuild(
    deployment: &Deployment,
    name: &str,
    mut report: impl FnMut(&Progress),
) -> anyhow::Result<Outcome> {
    let projection = crate::projection(name).ok_or_else(|| {
        let known: Vec<&str> = PROJECTIONS.iter().map(|p| p.name).collect();
        anyhow!(
            "there is no projection {name:?} (projections: {})",
            known.join(", ")
        )
    })?;
    let started = Instant::now();
    let topics: Vec<String> = projection
        .topics
        .iter()
        .map(|t| deployment.kafka.topic(t.name()))
        .collect();
    let target = replayable_messages(deployment, &topics).await?;
    let rebuild = Rebuild::start(&deployment.pool, projection, target).await?;

    let token = CancellationToken::new();
    let result = replay_and_swap(
        deployment,
        &rebuild,
        topics,
        target,
        &token,
        started,
        &mut report,
    )
    .await;
    match result {
        Ok(applied) => Ok(Outcome {
            phase: "swapped",
            rebuild_id: rebuild.id,
            applied,
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(error) => {
            token.cancel();
            if let Err(cleanup) = rebuild.fail(&deployment.pool, &format!("{error:#}")).await {
                tracing::error!(error = %cleanup, "cleaning up the failed rebuild");
            }
            Err(error.context(format!("rebuilding {name}")))
        }
    }
}

async fn replay_and_swap(
    deployment: &Deployment,
    rebuild: &Rebuild,
    topics: Vec<String>,
    target: i64,
    token: &CancellationToken,
    started: Instant,
    report: &mut impl FnMut(&Progress),
) -> anyhow::Result<i64> {
    let handler = OrdersProjection::into_schema(
        deployment.decoder.clone(),
        &rebuild.offsets_name,
        &rebuild.schema,
    );
    let group = format!("{}.rebuild-{}", deployment.live_group, rebuild.id);
    let bootstrap = &deployment.bootstrap_servers;
    let wiring = Wiring {
        topics,
        consumer: deployment.kafka.consumer_config(bootstrap, &group),
        producer: deployment
            .kafka
            .producer_config(bootstrap, &format!("{group}.dlq")),
        // The live projector dead-lettered the poison pills already.
        dead_letter_topic: None,
    };
    let consumer = Projector::new(
        deployment.pool.clone(),
        handler,
        &wiring,
        deployment.settings.clone(),
    )?;
    let mut running = tokio::spawn(consumer.run(token.clone()));

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if running.is_finished() {
            let stopped = (&mut running)
                .await
                .context("the rebuild's consumer panicked")?;
            return Err(match stopped {
                Err(error) => error.context("the rebuild's consumer stopped"),
                Ok(_) => anyhow!("the rebuild's consumer stopped early"),
            });
        }
        let applied = rebuild.applied(&deployment.pool).await?;
        rebuild.report(&deployment.pool, applied).await?;
        report(&Progress {
            phase: "replaying",
            applied,
            target,
            rate: applied as f64 / started.elapsed().as_secs_f64(),
        });
        if applied >= target {
            break;
        }
    }

    let stop = async {
        token.cancel();
        (&mut running)
            .await
            .context("the rebuild's consumer panicked")??;
        Ok(())
    };
    rebuild.swap(&deployment.pool, CATCH_UP, stop).await
}

/// Messages on `topics` from the beginning: the sum of the high watermarks.
/// Refuses when retention has already deleted the start of a partition: a
/// rebuild would silently lose those events.
async fn replayable_messages(deployment: &Deployment, topics: &[String]) -> anyhow::Result<i64> {
    let config = deployment
        .kafka
        .consumer_config(&deployment.bootstrap_servers, "tributary-ctl");
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let consumer: BaseConsumer = config.create().context("creating a Kafka client")?;
        let timeout = Duration::from_secs(10);
        let mut total = 0;
        for topic in &topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), timeout)
                .with_context(|| format!("reading the metadata of {topic}"))?;
            let partitions = metadata
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or_default();
            if partitions == 0 {
                bail!("topic {topic} does not exist");
            }
            for partition in 0..partitions as i32 {
                let (low, high) = consumer
                    .fetch_watermarks(topic, partition, timeout)
                    .with_context(|| format!("reading the offsets of {topic} partition {partition}"))?;
                if low > 0 {
                    bail!(
                        "{topic} partition {partition} starts at offset {low}: retention deleted older events, so a rebuild would lose them"
                    );
                }
                total += high;
            }
        }
        Ok(total)
    })
    .await?
}
