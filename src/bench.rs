//! `tributary bench`: measured numbers, printed as a table. Not a test: it
//! asserts nothing, so run it on a quiet machine and record what it prints
//! in BENCHMARKS.md.
//!
//! - projector: N order events (orders placed, paid, shipped, delivered,
//!   cancelled, refunded: `crate::traffic`) are produced to a fresh topic,
//!   then a fresh projector drains them into all seven read models; events/s
//!   from its first to its last batch. The ceiling is the same events written
//!   with the projector's own multi-row statements, split by order and applied
//!   with the same concurrency and batch size, one transaction per batch, but
//!   without Kafka, decoding or offsets, on the same database in the same run.
//! - command side: PlaceOrder through the HTTP API at a fixed concurrency
//!   with the relay stopped (commands/s, latency), then the relay alone
//!   drains the outbox (events/s).
//! - end to end: PlaceOrder at a fixed rate through the HTTP API; one watcher
//!   pages the query API until each accepted order is visible.
//!
//! Each run uses a scratch database (dropped afterwards) and its own topics.

mod commands;
mod end_to_end;
mod projector;
mod tasks;

use std::time::Duration;

use anyhow::bail;
use tributary_commands::{ProductCatalog, domain::Sku};
use tributary_platform::{db::scratch, shutdown::Shutdown};

use crate::{App, Listeners, Role, Settings};

/// Options of `tributary bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Events the projector drains.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Commands per second in the end-to-end run.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Length of the end-to-end run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Skip the end-to-end run.
    #[arg(long)]
    pub skip_e2e: bool,
    /// Skip the projector run.
    #[arg(long)]
    pub skip_projector: bool,
    /// PlaceOrder commands in the command-side run.
    #[arg(long, default_value_t = 20_000)]
    pub commands: usize,
    /// Commands in flight at once in the command-side run.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Skip the command-side run.
    #[arg(long)]
    pub skip_commands: bool,
    /// No-op tasks the task worker drains.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Tasks enqueued per second in the enqueue-to-start latency run.
    #[arg(long, default_value_t = 1000)]
    pub task_rate: u32,
    /// Skip the task runs.
    #[arg(long)]
    pub skip_tasks: bool,
}

/// Runs the benchmarks and prints their tables.
pub async fn run(mut settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    if args.events == 0
        || args.rate == 0
        || args.commands == 0
        || args.concurrency == 0
        || args.tasks == 0
        || args.task_rate == 0
    {
        bail!(
            "--events, --rate, --commands, --concurrency, --tasks and --task-rate must be at least 1"
        );
    }
    tributary_platform::telemetry::init_logs(&tributary_platform::telemetry::TelemetrySettings {
        log_level: "warn".into(),
        ..settings.telemetry.clone()
    });
    let run_id = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    settings.kafka.topic_prefix = format!("{}bench-{run_id}.", settings.kafka.topic_prefix);
    settings.kafka.session_timeout = Duration::from_secs(6);
    settings.projector.group_id = Some(format!("tributary-bench-{run_id}"));
    settings.tasks.group_id = Some(format!("tributary-bench-tasks-{run_id}"));
    settings.database =
        scratch::database_on(settings.database.url.expose(), "tributary_bench").await?;
    let listeners = Listeners::ephemeral(&mut settings).await?;
    let bearer = crate::app::own_token(&mut settings);
    let app = App::connect(settings, true).await?;
    // The command-side runs order SKU-0 to SKU-99.
    let skus: Vec<String> = (0..100).map(|n| format!("SKU-{n}")).collect();
    let catalog: Vec<_> = skus
        .iter()
        .map(|sku| Ok((Sku::parse(sku).map_err(anyhow::Error::msg)?, sku.as_str())))
        .collect::<anyhow::Result<_>>()?;
    ProductCatalog::new(app.pool.clone())
        .add_missing(&catalog)
        .await?;
    println!(
        "Kafka: {} · PostgreSQL: scratch database · {} cores",
        if app.cluster.is_mock() {
            "in-process mock cluster".to_owned()
        } else {
            app.cluster.bootstrap_servers()
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut shutdown = Shutdown::new();
    let token = shutdown.token();
    app.spawn(
        Role::Registry,
        Listeners {
            registry: listeners.registry,
            ..Listeners::default()
        },
        &mut shutdown,
    )
    .await?;
    let registry = tokio::spawn(shutdown.run(Duration::from_secs(5)));

    let outcome = async {
        if !args.skip_projector {
            projector::projector(&app, args.events).await?;
        }
        if !args.skip_commands {
            commands::command_side(&app, &args, &bearer).await?;
        }
        if !args.skip_tasks {
            tasks::tasks(&app, &args).await?;
        }
        if !args.skip_e2e {
            end_to_end::end_to_end(
                &app,
                &args,
                Listeners {
                    api: listeners.api,
                    query: listeners.query,
                    ..Listeners::default()
                },
                &bearer,
            )
            .await?;
        }
        anyhow::Ok(())
    }
    .await;
    token.cancel();
    registry.await??;
    app.pool.close().await;
    scratch::drop(&app.settings.database).await?;
    outcome
}
