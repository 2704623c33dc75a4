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

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use hdrhistogram::Histogram;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio::sync::Mutex;
use tributary_commands::{Catalog, domain::Sku};
use tributary_platform::{db::scratch, shutdown::Shutdown};
use tributary_schemas::{Topic, orders::OrderEvent};
use uuid::Uuid;

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
    Catalog::new(app.pool.clone()).add_missing(&catalog).await?;
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
            projector(&app, args.events).await?;
        }
        if !args.skip_commands {
            command_side(&app, &args, &bearer).await?;
        }
        if !args.skip_tasks {
            tasks(&app, &args).await?;
        }
        if !args.skip_e2e {
            end_to_end(
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

async fn projector(app: &App, events: usize) -> anyhow::Result<()> {
    app.ensure_topics().await?;
    let ids = app.contract_ids().await?;
    let topic = app.topic(Topic::Orders);
    // About 3.3 events per order; take exactly `events`, every order's events kept whole enough
    // (a cut order's later events are simply missing, as if not yet happened).
    let mut traffic = crate::traffic::orders(events * 10 / 33 + 1, 7);
    traffic.truncate(events);
    let events = traffic.len();

    let producer: FutureProducer = app
        .settings
        .kafka
        .producer_config(&app.cluster.bootstrap_servers(), "tributary-bench")
        .create()?;
    let clock = Instant::now();
    stream::iter(&traffic)
        .map(|event| {
            let (producer, topic, ids) = (&producer, &topic, &ids);
            async move {
                let value = crate::traffic::frame(ids, event)?;
                producer
                    .send(
                        FutureRecord::to(topic)
                            .key(event.order_id())
                            .payload(&value),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)?;
                anyhow::Ok(())
            }
        })
        .buffered(10_000)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    let produced = clock.elapsed();

    // The ceiling first: the same rows, the same statements, no Kafka and no decoding.
    let ceiling_rate = ceiling(app, &traffic).await?;

    // The projector: from its start until every offset is stored.
    let projector = app.projector().await?;
    let token = tokio_util::sync::CancellationToken::new();
    let clock = Instant::now();
    let running = tokio::spawn(projector.run(token.clone()));
    let mut first_batch = None;
    loop {
        let applied =
            tributary_consumer::applied(&app.pool, tributary_projector::ORDERS_PROJECTION, &topic)
                .await?;
        if applied > 0 && first_batch.is_none() {
            first_batch = Some(clock.elapsed());
        }
        if applied as usize >= events {
            break;
        }
        if clock.elapsed() > Duration::from_secs(600) {
            bail!("the projector applied {applied} of {events} events in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = clock.elapsed();
    token.cancel();
    running.await??;
    let startup = first_batch.unwrap_or_default();
    let projector_rate = events as f64 / (drained - startup).as_secs_f64();

    println!();
    println!(
        "projector ({events} order events into all seven read models, produced in {:.1} s)",
        produced.as_secs_f64()
    );
    println!("{:<44} {:>14}", "measure", "value");
    println!(
        "{:<44} {:>14.0}",
        "projector events/s (first batch → last)", projector_rate
    );
    println!(
        "{:<44} {:>14.1}",
        "projector start-up to first batch (s)",
        startup.as_secs_f64()
    );
    println!(
        "{:<44} {:>14.0}",
        "ceiling: raw batched upserts, events/s", ceiling_rate
    );
    println!(
        "{:<44} {:>13.0}%",
        "projector / ceiling",
        100.0 * projector_rate / ceiling_rate
    );
    Ok(())
}

/// The projector's own statements over the same events, without Kafka,
/// decoding or offsets, shaped like the projector's work: the events split
/// by order over as many streams as the topic has partitions, up to
/// `partition_concurrency` streams applied at once, one transaction per
/// `max_batch` events of a stream. Empties the tables after.
async fn ceiling(app: &App, events: &[OrderEvent]) -> anyhow::Result<f64> {
    let partitions = app.settings.kafka.partitions.max(1) as usize;
    let batch = app.settings.projector.max_batch;
    let mut streams: Vec<Vec<OrderEvent>> = vec![Vec::new(); partitions];
    for event in events {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(event.order_id(), &mut hasher);
        let stream = std::hash::Hasher::finish(&hasher) as usize % partitions;
        streams[stream].push(event.clone());
    }
    let clock = Instant::now();
    stream::iter(&streams)
        .map(|events| async move {
            for chunk in events.chunks(batch) {
                let mut tx = app.pool.begin().await?;
                tributary_projector::project(
                    &mut tx,
                    tributary_projector::READ_MODEL_SCHEMA,
                    chunk,
                )
                .await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(app.settings.projector.partition_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    let rate = events.len() as f64 / clock.elapsed().as_secs_f64();
    let tables = tributary_projector::PROJECTIONS[0]
        .tables
        .iter()
        .map(|t| format!("read_model.{t}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Our own table names, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {tables}")))
        .execute(&app.pool)
        .await?;
    Ok(rate)
}

async fn end_to_end(
    app: &App,
    args: &BenchArgs,
    listeners: Listeners,
    bearer: &str,
) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::new();
    let token = shutdown.token();
    for role in [Role::Relay, Role::Projector] {
        app.spawn(role, Listeners::default(), &mut shutdown).await?;
    }
    app.spawn(
        Role::Api,
        Listeners {
            api: listeners.api,
            ..Listeners::default()
        },
        &mut shutdown,
    )
    .await?;
    app.spawn(
        Role::Query,
        Listeners {
            query: listeners.query,
            ..Listeners::default()
        },
        &mut shutdown,
    )
    .await?;
    let roles = tokio::spawn(shutdown.run(Duration::from_secs(10)));
    // Let the projector join its group before the clock starts.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let api = format!("http://{}", app.settings.api.listen);
    let query = format!("http://{}", app.settings.query.listen);
    let http = crate::app::http_client(bearer, Duration::from_secs(10))?;
    let watch = Arc::new(Mutex::new(Watch::default()));
    let total = (f64::from(args.rate) * args.duration.as_secs_f64()) as usize;
    let watcher = tokio::spawn(watch_visibility(http.clone(), query, watch.clone(), total));

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut commands = tokio::task::JoinSet::new();
    let customer = Uuid::now_v7().to_string();
    let clock = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let (http, api, customer, watch) =
            (http.clone(), api.clone(), customer.clone(), watch.clone());
        commands.spawn(async move {
            let sent = Instant::now();
            watch.lock().await.in_flight.insert(i, std::time::SystemTime::now());
            let body = json!({"customer_id": customer, "currency": "EUR",
                "lines": [{"sku": format!("SKU-{}", i % 100), "quantity": 1, "unit_price_minor": 1000}]});
            let response = http.post(format!("{api}/orders")).json(&body).send().await?;
            if !response.status().is_success() {
                bail!("PlaceOrder answered {}", response.status());
            }
            let accepted: serde_json::Value = response.json().await?;
            let accepted_at = Instant::now();
            let order_id = Uuid::parse_str(accepted["order_id"].as_str().context("order_id")?)?;
            let mut watch = watch.lock().await;
            watch.commands.record(accepted_at.duration_since(sent).as_micros() as u64)?;
            watch.in_flight.remove(&i);
            watch.pending.insert(order_id, accepted_at);
            anyhow::Ok(())
        });
    }
    let sent_in = clock.elapsed();
    while let Some(result) = commands.join_next().await {
        result??;
    }
    watcher.await??;
    token.cancel();
    roles.await??;

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let watch = watch.lock().await;
    println!();
    println!(
        "end to end ({total} PlaceOrder at {}/s for {:.0} s; achieved {:.0}/s; visibility polled every 5 ms)",
        args.rate,
        args.duration.as_secs_f64(),
        total as f64 / sent_in.as_secs_f64()
    );
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "p50", "p90", "p99", "max"
    );
    for (name, h) in [
        ("command accepted", &watch.commands),
        ("accepted → visible in query API", &watch.visible),
    ] {
        println!(
            "{:<36} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}

async fn command_side(app: &App, args: &BenchArgs, bearer: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    let mut shutdown = Shutdown::new();
    let token = shutdown.token();
    app.spawn(
        Role::Api,
        Listeners {
            api: Some(listener),
            ..Listeners::default()
        },
        &mut shutdown,
    )
    .await?;
    let roles = tokio::spawn(shutdown.run(Duration::from_secs(10)));
    let http = crate::app::http_client(bearer, Duration::from_secs(30))?;

    // The commands alone, the relay stopped.
    let alone = place_orders(&http, &api, args).await?;

    // The relay alone drains what the commands wrote.
    let mut relay_shutdown = Shutdown::new();
    let relay_token = relay_shutdown.token();
    app.spawn(Role::Relay, Listeners::default(), &mut relay_shutdown)
        .await?;
    let relay = tokio::spawn(relay_shutdown.run(Duration::from_secs(10)));
    let clock = Instant::now();
    drain_outbox(app).await?;
    let drained = clock.elapsed();

    // The commands again, the relay publishing alongside as in production.
    let alongside = place_orders(&http, &api, args).await?;
    let clock = Instant::now();
    drain_outbox(app).await?;
    let lagging = clock.elapsed();
    relay_token.cancel();
    relay.await??;
    token.cancel();
    roles.await??;

    println!();
    println!(
        "command side ({} PlaceOrder over HTTP, {} in flight)",
        args.commands, args.concurrency
    );
    println!("{:<52} {:>14}", "measure", "value");
    for (label, run) in [("relay stopped", &alone), ("relay running", &alongside)] {
        println!(
            "{:<52} {:>14.0}",
            format!("commands/s, {label}"),
            args.commands as f64 / run.elapsed.as_secs_f64()
        );
        println!(
            "{:<52} {:>14.1}",
            format!("command latency p50 (ms), {label}"),
            run.millis(0.5)
        );
        println!(
            "{:<52} {:>14.1}",
            format!("command latency p99 (ms), {label}"),
            run.millis(0.99)
        );
    }
    println!(
        "{:<52} {:>14.0}",
        "relay events/s (outbox backlog → Kafka)",
        args.commands as f64 / drained.as_secs_f64()
    );
    println!(
        "{:<52} {:>14.0}",
        "relay's backlog drained after the last command (ms)",
        lagging.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The task worker, as its own process (`tributary run worker`, as in
/// production): no-op tasks/s from a backlog with its resident memory, then
/// enqueue-to-start latency at a fixed rate with the worker idle.
async fn tasks(app: &App, args: &BenchArgs) -> anyhow::Result<()> {
    use tributary_tasks::{Enqueue, Noop, definition::NoopArgs};

    app.ensure_topics().await?;
    let enqueuer = app.enqueuer().await?;
    let noop = Enqueue::new::<Noop>(&NoopArgs {})?;
    let clock = Instant::now();
    stream::iter(0..args.tasks)
        .map(|_| enqueuer.produce(&noop))
        .buffer_unordered(4096)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let enqueued = args.tasks as f64 / clock.elapsed().as_secs_f64();

    let mut worker = WorkerProcess::start(app)?;
    let mut first = None;
    let mut peak_rss = 0.0_f64;
    let drained = loop {
        let done = succeeded(app).await? as usize;
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if first.is_some() {
            peak_rss = peak_rss.max(worker.resident_mib().unwrap_or(0.0));
        }
        if done >= args.tasks {
            break first.map(|(at, before)| (at.elapsed(), args.tasks - before));
        }
        worker.check()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (drained, counted) = drained.context("no task ran")?;

    // Latency: the worker idle, tasks enqueued one by one at a fixed rate.
    let latency_tasks = (args.task_rate as usize * 5).max(1);
    let mut pace = tokio::time::interval(Duration::from_secs(1) / args.task_rate);
    let mut sent = Vec::with_capacity(latency_tasks);
    for _ in 0..latency_tasks {
        pace.tick().await;
        let enqueuer = enqueuer.clone();
        let noop = noop.clone();
        sent.push(tokio::spawn(async move { enqueuer.produce(&noop).await }));
    }
    for task in sent {
        task.await??;
    }
    let total = args.tasks + latency_tasks;
    while (succeeded(app).await? as usize) < total {
        worker.check()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_rss = worker.resident_mib();
    worker.stop();
    let (p50, p90, p99, max): (f64, f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.9) WITHIN GROUP (ORDER BY ms),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
         FROM (SELECT (extract(epoch FROM started_at - enqueued_at) * 1000)::float8 AS ms
               FROM tasks.results ORDER BY task_id DESC LIMIT $1) latest",
    )
    .bind(latency_tasks as i64)
    .fetch_one(&app.pool)
    .await?;

    println!();
    println!(
        "tasks ({} no-op tasks from a backlog; one `run worker` process, concurrency {})",
        args.tasks, app.settings.tasks.concurrency
    );
    println!("{:<52} {:>14}", "measure", "value");
    println!(
        "{:<52} {:>14.0}",
        "tasks/s through the worker (result stored, acked)",
        counted as f64 / drained.as_secs_f64()
    );
    println!(
        "{:<52} {:>14.0}",
        "tasks/s enqueued straight to Kafka", enqueued
    );
    println!(
        "{:<52} {:>14.0}",
        "worker resident, peak while draining (MiB)", peak_rss
    );
    if let Some(rss) = idle_rss {
        println!(
            "{:<52} {:>14.0}",
            "worker resident, idle after the runs (MiB)", rss
        );
    }
    println!(
        "enqueue → start at {}/s for 5 s, worker idle (ms): p50 {p50:.1}, p90 {p90:.1}, p99 {p99:.1}, max {max:.1}",
        args.task_rate
    );
    Ok(())
}

async fn succeeded(app: &App) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM tasks.results WHERE state = 'succeeded'")
            .fetch_one(&app.pool)
            .await?,
    )
}

/// `tributary run worker` in a process of its own, over the benchmark's
/// database, broker, topics, registry and task group.
struct WorkerProcess(std::process::Child);

impl WorkerProcess {
    fn start(app: &App) -> anyhow::Result<Self> {
        let settings = &app.settings;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command
            .args(["run", "worker"])
            .env("DATABASE_URL", settings.database.url.expose())
            .env("KAFKA_BROKERS", app.cluster.bootstrap_servers())
            .env(
                "TRIBUTARY__KAFKA__TOPIC_PREFIX",
                &settings.kafka.topic_prefix,
            )
            .env("TRIBUTARY__REGISTRY__URL", &settings.registry.url)
            .env("TRIBUTARY__TASKS__GROUP_ID", settings.tasks.group())
            .env(
                "TRIBUTARY__PROJECTOR__GROUP_ID",
                settings.projector.group_or(tributary_projector::GROUP),
            )
            .env("TRIBUTARY__TELEMETRY__LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::null());
        if let Some(token) = &settings.registry.token {
            command.env("TRIBUTARY__REGISTRY__TOKEN", token.expose());
        }
        Ok(Self(
            command.spawn().context("starting `tributary run worker`")?,
        ))
    }

    /// Fails if the worker has exited.
    fn check(&mut self) -> anyhow::Result<()> {
        match self.0.try_wait()? {
            Some(status) => bail!("the worker process exited: {status}"),
            None => Ok(()),
        }
    }

    fn resident_mib(&self) -> Option<f64> {
        resident_mib(&format!("/proc/{}/status", self.0.id()))
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A process's resident memory in MiB, from its `/proc/<pid>/status` (Linux).
fn resident_mib(status: &str) -> Option<f64> {
    let status = std::fs::read_to_string(status).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// How long a run of commands took, and each command's latency in µs.
struct CommandRun {
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl CommandRun {
    fn millis(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// `args.commands` PlaceOrder over HTTP, `args.concurrency` at a time.
async fn place_orders(
    http: &reqwest::Client,
    api: &str,
    args: &BenchArgs,
) -> anyhow::Result<CommandRun> {
    let customer = Uuid::now_v7().to_string();
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let clock = Instant::now();
    stream::iter(0..args.commands)
        .map(|i| {
            let (customer, latency) = (&customer, latency.clone());
            async move {
                let body = json!({"customer_id": customer, "currency": "EUR",
                    "lines": [{"sku": format!("SKU-{}", i % 100), "quantity": 1 + i % 3, "unit_price_minor": 1000}]});
                let sent = Instant::now();
                let response = http.post(format!("{api}/orders")).json(&body).send().await?;
                if !response.status().is_success() {
                    bail!("PlaceOrder answered {}", response.status());
                }
                latency.lock().await.record(sent.elapsed().as_micros() as u64)?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    let elapsed = clock.elapsed();
    let latency = Arc::into_inner(latency)
        .expect("every command has finished")
        .into_inner();
    Ok(CommandRun { elapsed, latency })
}

/// Waits until the relay has published every outbox row.
async fn drain_outbox(app: &App) -> anyhow::Result<()> {
    let clock = Instant::now();
    loop {
        let (waiting, _) =
            tributary_outbox::relay::backlog(&mut *app.pool.acquire().await?).await?;
        if waiting == 0 {
            return Ok(());
        }
        if clock.elapsed() > Duration::from_secs(600) {
            bail!("{waiting} outbox rows still unpublished after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the end-to-end run is waiting for.
struct Watch {
    /// Commands sent and not yet answered, with the wall-clock time they were sent.
    in_flight: std::collections::BTreeMap<usize, std::time::SystemTime>,
    /// Orders accepted and not yet visible, with the time they were accepted.
    pending: std::collections::BTreeMap<Uuid, Instant>,
    commands: Histogram<u64>,
    visible: Histogram<u64>,
    seen: usize,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            in_flight: Default::default(),
            pending: Default::default(),
            commands: Histogram::new(3).expect("3 significant digits is valid"),
            visible: Histogram::new(3).expect("3 significant digits is valid"),
            seen: 0,
        }
    }
}

impl Watch {
    /// The lowest order id that may still become visible: the oldest pending
    /// order, or the lowest UUIDv7 of the oldest command still in flight
    /// (the API mints ids after the command is sent).
    fn low_watermark(&self) -> Option<Uuid> {
        let pending = self.pending.keys().next().copied();
        let in_flight = self.in_flight.values().min().map(|sent| {
            let millis = sent
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            Uuid::from_u128(millis.saturating_sub(5) << 80)
        });
        pending.into_iter().chain(in_flight).min()
    }
}

/// One watcher pages the query API from the low watermark every 5 ms and
/// records when each accepted order first appears: the load it adds does not
/// grow with latency, unlike polling every order.
async fn watch_visibility(
    http: reqwest::Client,
    query: String,
    watch: Arc<Mutex<Watch>>,
    total: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let watermark = {
            let watch = watch.lock().await;
            if watch.seen == total {
                return Ok(());
            }
            watch.low_watermark()
        };
        if let Some(mut after) = watermark.map(|id| Uuid::from_u128(id.as_u128().saturating_sub(1)))
        {
            loop {
                let page: serde_json::Value = http
                    .get(format!("{query}/orders?after={after}&limit=1000"))
                    .send()
                    .await?
                    .json()
                    .await?;
                let now = Instant::now();
                let items = page["items"].as_array().context("a page of orders")?;
                let mut watch = watch.lock().await;
                for item in items {
                    let id = Uuid::parse_str(item["order_id"].as_str().context("order_id")?)?;
                    if let Some(accepted_at) = watch.pending.remove(&id) {
                        watch
                            .visible
                            .record(now.duration_since(accepted_at).as_micros() as u64)?;
                        watch.seen += 1;
                    }
                }
                match page["next_after"].as_str() {
                    Some(next)
                        if watch
                            .pending
                            .keys()
                            .next_back()
                            .is_some_and(|last| last.to_string().as_str() > next) =>
                    {
                        after = Uuid::parse_str(next)?;
                    }
                    _ => break,
                }
            }
        }
        if Instant::now() > deadline {
            bail!("orders still not visible after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
