//! The command-side benchmark: PlaceOrder over HTTP at a fixed concurrency,
//! with the relay stopped and running, and the relay draining the backlog.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use futures::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

use tributary_platform::shutdown::Shutdown;

use super::BenchArgs;
use crate::{App, Listeners, Role};

pub(super) async fn command_side(app: &App, args: &BenchArgs, bearer: &str) -> anyhow::Result<()> {
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
