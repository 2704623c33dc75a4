//! The end-to-end benchmark: PlaceOrder at a fixed rate, each order watched
//! until the query API shows it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

use tributary_platform::shutdown::Shutdown;

use super::BenchArgs;
use crate::{App, Listeners, Role};

pub(super) async fn end_to_end(
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
