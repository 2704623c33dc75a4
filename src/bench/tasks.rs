//! The task benchmark: no-op tasks drained from a backlog by a `run worker`
//! process, and enqueue-to-start latency with the worker idle.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};

use super::BenchArgs;
use crate::App;

pub(super) async fn tasks(app: &App, args: &BenchArgs) -> anyhow::Result<()> {
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
    let tributary_tasks::results::StartLatency { p50, p90, p99, max } =
        tributary_tasks::results::start_latency(&app.pool, latency_tasks as i64).await?;

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
    tributary_tasks::results::count_in_state(&app.pool, tributary_tasks::results::State::Succeeded)
        .await
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
