//! Schemas evolve without stopping anyone: OrderPlaced v2 added an optional
//! `channel`. A projector built on v2 applies events written with v1, and
//! a projector still reading as v1 applies events written with v2.

use std::time::Duration;

use apache_avro::{Schema, writer::datum::GenericDatumWriter};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tributary_consumer::{AvroDecoder, Consumer};
use tributary_projector::{Decoder, OrdersProjection};
use tributary_schemas::{
    CONTRACT, Event, Topic, framing,
    orders::{OrderLine, OrderPlaced},
};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually};

/// OrderPlaced as v1 producers still write it: no `channel`.
#[derive(Serialize)]
#[serde(rename = "OrderPlaced")]
struct OrderPlacedV1 {
    order_id: String,
    customer_id: String,
    currency: String,
    lines: Vec<OrderLine>,
    total_minor: i64,
    placed_at: i64,
}

fn v1_schema() -> Schema {
    let history = CONTRACT
        .iter()
        .map(|record| record())
        .find(|h| h.full_name == OrderPlaced::FULL_NAME)
        .unwrap();
    assert_eq!(history.versions.len(), 2, "OrderPlaced has v1 and v2");
    Schema::parse_str(history.versions[0]).unwrap()
}

fn line() -> OrderLine {
    OrderLine {
        sku: "SKU-7".into(),
        quantity: 3,
        unit_price_minor: 250,
    }
}

type Row = (String, i64, i32, Option<String>);

async fn row(app: &TestApp, order_id: &str) -> Option<Row> {
    sqlx::query_as(
        "SELECT currency::text, total_minor, item_count, channel FROM read_model.orders WHERE order_id = $1::uuid",
    )
    .bind(order_id)
    .fetch_optional(&app.app.pool)
    .await
    .unwrap()
}

async fn until_projected(app: &TestApp, order_id: &str) -> Row {
    eventually(Duration::from_secs(60), "the order projected", || async {
        row(app, order_id).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_projector_applies_v1_events_with_the_new_field_at_its_default() {
    let app = TestApp::spawn(&[]).await;
    let registry = app.app.registry_client().unwrap();
    let subject = tributary_schemas::subject(&app.app.topic(Topic::Orders), OrderPlaced::FULL_NAME);
    let v1 = v1_schema();
    let v1_id = registry
        .register(&subject, &v1.canonical_form())
        .await
        .unwrap();
    assert_ne!(
        Some(v1_id),
        app.ids().await.id_of(OrderPlaced::FULL_NAME),
        "v1 has an id of its own"
    );

    let order_id = Uuid::now_v7().to_string();
    let old = OrderPlacedV1 {
        order_id: order_id.clone(),
        customer_id: Uuid::now_v7().to_string(),
        currency: "EUR".into(),
        lines: vec![line()],
        total_minor: 750,
        placed_at: 1_767_225_600_000,
    };
    let datum = GenericDatumWriter::builder(&v1)
        .build()
        .unwrap()
        .write_ser_to_vec(&old)
        .unwrap();
    app.produce_raw(&app.producer(), &order_id, &framing::frame(v1_id, &datum))
        .await;

    let projector = app.app.projector().await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone()));
    assert_eq!(
        until_projected(&app, &order_id).await,
        ("EUR".into(), 750, 3, None),
        "applied, with no channel"
    );
    stop.cancel();
    let batch = running.await.unwrap().unwrap();
    assert_eq!((batch.applied, batch.dead_lettered), (1, 0));
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_projector_applies_v2_events_without_the_new_field() {
    let app = TestApp::spawn(&[]).await;
    let ids = app.ids().await;
    let order_id = Uuid::now_v7().to_string();
    let new = OrderPlaced {
        order_id: order_id.clone(),
        customer_id: Uuid::now_v7().to_string(),
        currency: "USD".into(),
        lines: vec![line()],
        total_minor: 750,
        placed_at: 1_767_225_600_000,
        channel: Some("app".into()),
    };
    app.produce(&app.producer(), &ids, &new).await;
    let control = OrderPlaced {
        order_id: Uuid::now_v7().to_string(),
        ..new.clone()
    };

    // A projector deployed before v2: it reads OrderPlaced as v1.
    let decoder = Decoder::new(
        AvroDecoder::new(app.app.registry_client().unwrap(), ids.clone())
            .pin_reader(OrderPlaced::FULL_NAME, v1_schema()),
    );
    let group = app.app.settings.projector.group_id.clone().unwrap();
    let old_projector = Consumer::new(
        app.app.pool.clone(),
        OrdersProjection::new(decoder),
        &app.app.wiring(&group, vec![app.app.topic(Topic::Orders)]),
        app.app.settings.projector.clone(),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(old_projector.run(stop.clone()));
    assert_eq!(
        until_projected(&app, &order_id).await,
        ("USD".into(), 750, 3, None),
        "applied; a v1 reader never sees the channel"
    );
    stop.cancel();
    let batch = running.await.unwrap().unwrap();
    assert_eq!((batch.applied, batch.dead_lettered), (1, 0));

    // The same event read by today's projector keeps its channel.
    app.produce(&app.producer(), &ids, &control).await;
    let projector = app.app.projector().await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone()));
    assert_eq!(
        until_projected(&app, &control.order_id).await.3.as_deref(),
        Some("app")
    );
    stop.cancel();
    running.await.unwrap().unwrap();
    app.stop().await.unwrap();
}
