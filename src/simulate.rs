//! `tributary simulate payments|shipments`: upstream systems for the shop,
//! publishing straight to Kafka with the Confluent framing as a payment
//! provider or a warehouse would.
//!
//! - payments: for every `OrderPlaced`, a `PaymentCaptured` for the order's
//!   total (or, with `--failure-ratio`, a `PaymentFailed`);
//! - shipments: for every `OrderPaid`, a `ShipmentDispatched`, then a
//!   `ShipmentDelivered`.
//!
//! They read the order topic in their own consumer group (at-least-once, as a
//! real upstream would), at most `--rate` events per second.

use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use tokio_util::sync::CancellationToken;
use tributary_consumer::AvroDecoder;
use tributary_registry::ContractIds;
use tributary_schemas::{
    Event, Topic, framing,
    orders::OrderEvent,
    payments::{PaymentCaptured, PaymentFailed},
    warehouse::{ShipmentDelivered, ShipmentDispatched},
};
use uuid::Uuid;

use crate::App;

/// Which upstream system to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Upstream {
    /// The payment provider: pays placed orders.
    Payments,
    /// The warehouse: ships and delivers paid orders.
    Shipments,
}

/// Options of `tributary simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The upstream system to play.
    #[arg(value_enum)]
    pub upstream: Upstream,
    /// Most events published per second.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Share of payments that fail instead (payments only, 0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub failure_ratio: f64,
    /// Stop after this many orders (default: run until interrupted).
    #[arg(long)]
    pub orders: Option<usize>,
}

/// Plays `args.upstream` until `token` is cancelled or `args.orders` orders
/// were handled; returns how many events it published.
pub async fn run(
    app: &App,
    args: &SimulateArgs,
    token: CancellationToken,
) -> anyhow::Result<usize> {
    anyhow::ensure!(args.rate >= 1, "--rate must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.failure_ratio),
        "--failure-ratio must be between 0 and 1"
    );
    let ids = app.contract_ids().await?;
    let decoder = AvroDecoder::new(app.registry_client()?, ids.clone());
    let bootstrap = app.cluster.bootstrap_servers();
    let group = match args.upstream {
        Upstream::Payments => "tributary-simulated-payment-provider",
        Upstream::Shipments => "tributary-simulated-warehouse",
    };
    let consumer: StreamConsumer = app
        .settings
        .kafka
        .consumer_config(
            &bootstrap,
            &format!("{}{group}", app.settings.kafka.topic_prefix),
        )
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "true")
        .create()
        .context("creating the simulator's consumer")?;
    consumer.subscribe(&[&app.topic(Topic::Orders)])?;
    let producer: FutureProducer = app
        .settings
        .kafka
        .producer_config(&bootstrap, group)
        .create()?;
    let upstream = Publisher {
        app,
        ids: &ids,
        producer,
    };

    let mut rng = StdRng::from_os_rng();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    let (mut handled, mut published, started) = (0, 0, Instant::now());
    while args.orders.is_none_or(|n| handled < n) {
        let message = tokio::select! {
            () = token.cancelled() => break,
            message = consumer.recv() => message?,
        };
        let Ok(Some(decoded)) = decoder.decode::<OrderEvent>(message.payload()).await else {
            continue;
        };
        let now = chrono::Utc::now().timestamp_millis();
        match (args.upstream, decoded.value) {
            (Upstream::Payments, OrderEvent::Placed(order)) => {
                ticker.tick().await;
                let payment_id = format!("pay_{}", Uuid::now_v7().simple());
                if rng.random_bool(args.failure_ratio) {
                    let failed = PaymentFailed {
                        payment_id,
                        order_id: order.order_id,
                        amount_minor: order.total_minor,
                        currency: order.currency,
                        reason: "card declined".into(),
                        failed_at: now,
                    };
                    upstream.publish(&failed).await?;
                } else {
                    let captured = PaymentCaptured {
                        payment_id,
                        order_id: order.order_id,
                        amount_minor: order.total_minor,
                        currency: order.currency,
                        captured_at: now,
                    };
                    upstream.publish(&captured).await?;
                }
                published += 1;
            }
            (Upstream::Shipments, OrderEvent::Paid(paid)) => {
                ticker.tick().await;
                let shipment_id = format!("shp_{}", Uuid::now_v7().simple());
                let dispatched = ShipmentDispatched {
                    shipment_id: shipment_id.clone(),
                    order_id: paid.order_id.clone(),
                    carrier: ["DHL", "UPS", "PostNL"][rng.random_range(0..3)].into(),
                    tracking_number: format!("TRK{:010}", rng.random_range(0..10_000_000_000_u64)),
                    dispatched_at: now,
                };
                upstream.publish(&dispatched).await?;
                let delivered = ShipmentDelivered {
                    shipment_id,
                    order_id: paid.order_id,
                    delivered_at: now + 1,
                };
                upstream.publish(&delivered).await?;
                published += 2;
            }
            _ => continue,
        }
        handled += 1;
        if handled % 100 == 0 {
            eprintln!(
                "{handled} orders handled, {published} events published ({:.0}/s)",
                published as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(published)
}

/// Publishes upstream events framed with their registered schema ids.
struct Publisher<'a> {
    app: &'a App,
    ids: &'a ContractIds,
    producer: FutureProducer,
}

impl Publisher<'_> {
    async fn publish<E: Event>(&self, event: &E) -> anyhow::Result<()> {
        let id = self
            .ids
            .id_of(E::FULL_NAME)
            .context("the event's schema is registered")?;
        let value = framing::encode(id, event)?;
        let topic = self.app.topic(E::TOPIC);
        self.producer
            .send(
                FutureRecord::to(&topic).key(event.key()).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| error)
            .with_context(|| format!("publishing {} to {topic}", E::FULL_NAME))?;
        Ok(())
    }
}
