//! `tributary ctl projection rebuild NAME`: replay a projection from the
//! earliest offset into fresh tables while the current ones keep serving,
//! then swap them in atomically (see `tributary_projector::rebuild`).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tributary_projector::{OrdersProjection, PROJECTIONS, Projector, rebuild::Rebuild};

use crate::{App, Settings};

/// How long the swap waits, with the live projector held, for the rebuild
/// to reach the live projection's offsets.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Projection commands.
#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Replay a projection from the earliest offset into fresh tables while
    /// the current ones keep serving, then swap them in atomically.
    Rebuild {
        /// The projection to rebuild (`orders`).
        name: String,
        /// Print progress and the outcome as JSON lines on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a projection command.
pub async fn run(settings: Settings, command: ProjectionCommand) -> anyhow::Result<()> {
    match command {
        ProjectionCommand::Rebuild { name, json } => {
            let app = App::connect(settings, false).await?;
            let outcome = rebuild(&app, &name, |progress| {
                if json {
                    println!("{}", serde_json::to_string(progress).unwrap_or_default());
                } else {
                    eprintln!(
                        "rebuilding {name}: {} / {} messages ({:.1}%), {:.0} messages/s",
                        progress.applied,
                        progress.target,
                        progress.percent(),
                        progress.rate
                    );
                }
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&outcome)?);
            } else {
                println!(
                    "rebuilt {name}: {} messages replayed in {:.1} s and swapped in (rebuild {})",
                    outcome.applied, outcome.seconds, outcome.rebuild_id
                );
            }
            Ok(())
        }
    }
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
    fn percent(&self) -> f64 {
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
    app: &App,
    name: &str,
    mut report: impl FnMut(&Progress),
) -> anyhow::Result<Outcome> {
    let projection = tributary_projector::projection(name).ok_or_else(|| {
        let known: Vec<&str> = PROJECTIONS.iter().map(|p| p.name).collect();
        anyhow!(
            "there is no projection {name:?} (projections: {})",
            known.join(", ")
        )
    })?;
    let started = Instant::now();
    let topics: Vec<String> = projection.topics.iter().map(|t| app.topic(*t)).collect();
    let target = replayable_messages(app, &topics).await?;
    let rebuild = Rebuild::start(&app.pool, projection, target).await?;

    let token = CancellationToken::new();
    let result = replay_and_swap(app, &rebuild, topics, target, &token, started, &mut report).await;
    match result {
        Ok(applied) => Ok(Outcome {
            phase: "swapped",
            rebuild_id: rebuild.id,
            applied,
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(error) => {
            token.cancel();
            if let Err(cleanup) = rebuild.fail(&app.pool, &format!("{error:#}")).await {
                tracing::error!(error = %cleanup, "cleaning up the failed rebuild");
            }
            Err(error.context(format!("rebuilding {name}")))
        }
    }
}

async fn replay_and_swap(
    app: &App,
    rebuild: &Rebuild,
    topics: Vec<String>,
    target: i64,
    token: &CancellationToken,
    started: Instant,
    report: &mut impl FnMut(&Progress),
) -> anyhow::Result<i64> {
    let handler = OrdersProjection::into_schema(
        app.order_decoder().await?,
        &rebuild.offsets_name,
        &rebuild.schema,
    );
    let live_group = app.settings.projector.group_or(tributary_projector::GROUP);
    let mut wiring = app.wiring(&format!("{live_group}.rebuild-{}", rebuild.id), topics);
    // The live projector dead-lettered the poison pills already.
    wiring.dead_letter_topic = None;
    let consumer = Projector::new(
        app.pool.clone(),
        handler,
        &wiring,
        app.settings.projector.clone(),
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
        let applied = rebuild.applied(&app.pool).await?;
        rebuild.report(&app.pool, applied).await?;
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
    rebuild.swap(&app.pool, CATCH_UP, stop).await
}

/// Messages on `topics` from the beginning: the sum of the high watermarks.
/// Refuses when retention has already deleted the start of a partition: a
/// rebuild would silently lose those events.
async fn replayable_messages(app: &App, topics: &[String]) -> anyhow::Result<i64> {
    let config = app
        .settings
        .kafka
        .consumer_config(&app.cluster.bootstrap_servers(), "tributary-ctl");
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
