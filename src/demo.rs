//! `tributary demo`: every role in this process, orders from a generator
//! through the HTTP command API, and the read model's counts at the end.
//!
//! Kafka: the brokers in `KAFKA_BROKERS`, or librdkafka's in-process mock
//! cluster when unset. PostgreSQL: `DATABASE_URL` (default: a local server,
//! database `tributary`, created if missing). Each run uses its own topic
//! prefix, so runs never see each other's events; counts cover this run only.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::json;
use sqlx::PgPool;
use tributary_commands::{ProductCatalog, domain::Sku};
use tributary_platform::shutdown::Shutdown;
use uuid::Uuid;

use crate::{App, Listeners, Role, Settings};

/// Options of `tributary demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Orders to place.
    #[arg(long, default_value_t = 2000)]
    pub orders: usize,
    /// Commands in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Share of orders cancelled after they are placed (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub cancel_ratio: f64,
    /// Longest wait for the read model to catch up after the last command.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Runs the demo and prints the read model's counts.
pub async fn run(mut settings: Settings, args: DemoArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.cancel_ratio) {
        bail!("--cancel-ratio must be between 0 and 1");
    }
    if args.orders == 0 || args.concurrency == 0 {
        bail!("--orders and --concurrency must be at least 1");
    }
    tributary_platform::telemetry::init_logs(&tributary_platform::telemetry::TelemetrySettings {
        log_level: "warn".into(),
        ..settings.telemetry.clone()
    });
    let run_id = Utc::now().format("%Y%m%d%H%M%S").to_string();
    settings.kafka.topic_prefix = format!("{}demo-{run_id}.", settings.kafka.topic_prefix);
    settings.kafka.session_timeout = Duration::from_secs(6);
    settings.projector.group_id = Some(format!("tributary-demo-{run_id}"));
    let listeners = Listeners::ephemeral(&mut settings).await?;
    let bearer = crate::app::own_token(&mut settings);

    let app = App::connect(settings, true).await?;
    let catalog: Vec<_> = SKUS
        .iter()
        .map(|sku| Ok((Sku::parse(sku).map_err(anyhow::Error::msg)?, *sku)))
        .collect::<anyhow::Result<_>>()?;
    ProductCatalog::new(app.pool.clone())
        .add_missing(&catalog)
        .await?;
    let brokers = if app.cluster.is_mock() {
        "librdkafka's in-process mock cluster".to_owned()
    } else {
        app.cluster.bootstrap_servers()
    };
    println!(
        "Tributary demo: Kafka at {brokers}, topics prefixed {:?}",
        app.settings.kafka.topic_prefix
    );
    let mut shutdown = Shutdown::new();
    let token = shutdown.token();
    app.spawn(Role::All, listeners, &mut shutdown).await?;
    let roles = tokio::spawn(shutdown.run(Duration::from_secs(10)));

    let outcome = drive(&app, &args, &bearer).await;
    token.cancel();
    roles.await.context("the roles' task")??;
    outcome
}

async fn drive(app: &App, args: &DemoArgs, bearer: &str) -> anyhow::Result<()> {
    let started_at = Utc::now() - chrono::Duration::seconds(1);
    let api = format!("http://{}", app.settings.api.listen);
    let http = crate::app::http_client(bearer, Duration::from_secs(10))
        .context("building the HTTP client")?;

    let bar = ProgressBar::new(args.orders as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} placed {pos}/{len} orders · {msg} · {elapsed}")
            .expect("a valid template"),
    );
    let projected = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (bar, pool, projected) = (bar.clone(), app.pool.clone(), projected.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(counts) = counts(&pool, started_at).await {
                    projected.store(counts.orders as usize, Ordering::Relaxed);
                    bar.set_message(format!("{} in the read model", counts.orders));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let clock = Instant::now();
    let customers: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();
    let mut cancelled = 0;
    let results: Vec<anyhow::Result<bool>> = stream::iter(0..args.orders)
        .map(|i| {
            let (http, api, bar, customers) = (&http, &api, &bar, &customers);
            async move {
                let mut rng = StdRng::seed_from_u64(i as u64);
                let outcome = place_one(http, api, &mut rng, customers, args.cancel_ratio).await;
                bar.inc(1);
                outcome
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    for result in results {
        cancelled += usize::from(result?);
    }
    let commanded = clock.elapsed();

    let deadline = Instant::now() + args.timeout;
    let final_counts = loop {
        let counts = counts(&app.pool, started_at).await?;
        if counts.orders as usize == args.orders && counts.cancelled as usize == cancelled {
            break counts;
        }
        if Instant::now() > deadline {
            bail!(
                "the read model holds {} of {} orders ({} of {} cancellations) after {:?}",
                counts.orders,
                args.orders,
                counts.cancelled,
                cancelled,
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    watcher.abort();
    bar.finish_with_message(format!("{} in the read model", final_counts.orders));

    println!();
    println!(
        "{} commands in {:.1} s ({:.0}/s); read model complete after {:.1} s",
        args.orders + cancelled,
        commanded.as_secs_f64(),
        (args.orders + cancelled) as f64 / commanded.as_secs_f64(),
        clock.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "{:<10} {:>8} {:>10} {:>18}",
        "currency", "orders", "cancelled", "placed value"
    );
    for row in &final_counts.by_currency {
        println!(
            "{:<10} {:>8} {:>10} {:>18}",
            row.0,
            row.1,
            row.2,
            money(row.3, &row.0)
        );
    }
    println!(
        "{:<10} {:>8} {:>10}",
        "all", final_counts.orders, final_counts.cancelled
    );
    Ok(())
}

const SKUS: [&str; 12] = [
    "TEA-GREEN",
    "TEA-BLACK",
    "MUG-WHITE",
    "MUG-BLUE",
    "KETTLE-1L",
    "FILTER-50",
    "HONEY-250",
    "BISCUIT-12",
    "SPOON-4",
    "TRAY-OAK",
    "COSY-WOOL",
    "CADDY-TIN",
];

/// Places one order, cancels it with probability `cancel_ratio`; returns whether it did.
async fn place_one(
    http: &reqwest::Client,
    api: &str,
    rng: &mut StdRng,
    customers: &[Uuid],
    cancel_ratio: f64,
) -> anyhow::Result<bool> {
    let line_count = rng.random_range(1..=4);
    let skus: Vec<&str> = SKUS.choose_multiple(rng, line_count).copied().collect();
    let lines: Vec<_> = skus
        .into_iter()
        .map(|sku| json!({"sku": sku, "quantity": rng.random_range(1..=3), "unit_price_minor": rng.random_range(150..=4500)}))
        .collect();
    let currency = ["EUR", "USD", "GBP"].choose(rng).expect("currencies");
    let body = json!({
        "customer_id": customers.choose(rng).expect("customers").to_string(),
        "currency": currency,
        "lines": lines,
    });
    let response = http
        .post(format!("{api}/orders"))
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "PlaceOrder answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let accepted: serde_json::Value = response.json().await?;
    if !rng.random_bool(cancel_ratio) {
        return Ok(false);
    }
    let order_id = accepted["order_id"]
        .as_str()
        .context("PlaceOrder answered without order_id")?;
    let response = http
        .post(format!("{api}/orders/{order_id}/cancel"))
        .json(&json!({"reason": "changed my mind"}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "CancelOrder answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(true)
}

struct Counts {
    orders: i64,
    cancelled: i64,
    /// (currency, orders, cancelled, total placed in minor units)
    by_currency: Vec<(String, i64, i64, i64)>,
}

async fn counts(pool: &PgPool, since: DateTime<Utc>) -> anyhow::Result<Counts> {
    let by_currency: Vec<(String, i64, i64, i64)> = sqlx::query!(
        r#"SELECT currency::text AS "currency!", count(*) AS "orders!",
                  count(*) FILTER (WHERE status = 'cancelled') AS "cancelled!",
                  sum(total_minor)::bigint AS "total!"
           FROM read_model.orders WHERE placed_at >= $1 GROUP BY currency ORDER BY currency"#,
        since
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| (row.currency, row.orders, row.cancelled, row.total))
    .collect();
    Ok(Counts {
        orders: by_currency.iter().map(|r| r.1).sum(),
        cancelled: by_currency.iter().map(|r| r.2).sum(),
        by_currency,
    })
}

/// Minor units as a decimal amount of the currency (`123456 EUR` → `1234.56 EUR`).
fn money(minor: i64, currency: &str) -> String {
    let exponent = iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .unwrap_or(2) as u32;
    let scale = 10_i64.pow(exponent);
    if exponent == 0 {
        return format!("{minor} {currency}");
    }
    format!(
        "{}.{:0width$} {currency}",
        minor / scale,
        minor % scale,
        width = exponent as usize
    )
}
