//! The projector benchmark: order events drained into all seven read
//! models, beside a ceiling of the same statements without Kafka.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{StreamExt, stream};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tributary_schemas::{Topic, orders::OrderEvent};

use crate::App;

pub(super) async fn projector(app: &App, events: usize) -> anyhow::Result<()> {
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
    tributary_projector::truncate(&app.pool, &tributary_projector::PROJECTIONS[0]).await?;
    Ok(rate)
}
