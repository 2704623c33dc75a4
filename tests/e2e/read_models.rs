//! The analysts' read models: what each row means, and that every event is
//! applied exactly once across crashes, killed instances and rebuilds.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, NaiveDate, Utc};
use rdkafka::message::OwnedMessage;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tributary_consumer::{Consumer, DecodeError, Envelope, Handler};
use tributary_projector::OrdersProjection;
use tributary_schemas::{
    Topic,
    orders::{
        OrderCancelled, OrderDelivered, OrderEvent, OrderLine, OrderPaid, OrderPlaced,
        OrderRefunded, OrderShipped,
    },
};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, eventually, test_settings},
    shop,
};

const HOUR: i64 = 3_600_000;
/// 2026-01-01T00:00:00Z.
const DAY1: i64 = 1_767_225_600_000;
const DAY2: i64 = DAY1 + 24 * HOUR;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

async fn wait_until_applied(app: &TestApp, messages: i64) {
    eventually(
        Duration::from_secs(90),
        &format!("{messages} messages applied"),
        || async { (app.stored_offsets().await >= messages).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_model_follows_the_orders_through_their_lives() {
    let app = TestApp::spawn(&[]).await;
    let (c1, c2) = (Uuid::now_v7(), Uuid::now_v7());
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let line = |sku: &str, quantity, unit_price_minor| OrderLine {
        sku: sku.into(),
        quantity,
        unit_price_minor,
    };
    let placed = |order: Uuid, customer: Uuid, currency: &str, lines: Vec<OrderLine>, t| {
        let total_minor = lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_minor)
            .sum();
        OrderEvent::Placed(OrderPlaced {
            order_id: order.to_string(),
            customer_id: customer.to_string(),
            currency: currency.into(),
            lines,
            total_minor,
            placed_at: t,
            channel: Some("web".into()),
        })
    };
    let paid = |order: Uuid, amount_minor, currency: &str, t| {
        OrderEvent::Paid(OrderPaid {
            order_id: order.to_string(),
            payment_id: format!("pay-{order}"),
            amount_minor,
            currency: currency.into(),
            paid_at: t,
        })
    };
    let events = vec![
        // Order A (C1, EUR): paid, shipped, delivered, then refunded in full.
        placed(
            a,
            c1,
            "EUR",
            vec![line("SKU-1", 2, 500), line("SKU-2", 1, 1000)],
            DAY1 + 10 * HOUR,
        ),
        paid(a, 2000, "EUR", DAY1 + 11 * HOUR),
        // Order B (C1, EUR): cancelled before payment.
        placed(b, c1, "EUR", vec![line("SKU-1", 1, 500)], DAY1 + 12 * HOUR),
        OrderEvent::Cancelled(OrderCancelled {
            order_id: b.to_string(),
            reason: "changed my mind".into(),
            cancelled_at: DAY1 + 12 * HOUR + HOUR / 2,
        }),
        OrderEvent::Shipped(OrderShipped {
            order_id: a.to_string(),
            shipment_id: "shp-a".into(),
            carrier: "DHL".into(),
            shipped_at: DAY1 + 13 * HOUR,
        }),
        // Order C (C2, USD): paid, and the payment repeated.
        placed(c, c2, "USD", vec![line("SKU-2", 3, 1000)], DAY2 + 9 * HOUR),
        paid(c, 3000, "USD", DAY2 + 10 * HOUR),
        paid(c, 3000, "USD", DAY2 + 10 * HOUR),
        OrderEvent::Delivered(OrderDelivered {
            order_id: a.to_string(),
            shipment_id: "shp-a".into(),
            delivered_at: DAY2 + 13 * HOUR,
        }),
        OrderEvent::Refunded(OrderRefunded {
            order_id: a.to_string(),
            refund_id: "ref-a".into(),
            amount_minor: 2000,
            currency: "EUR".into(),
            refunded_at: DAY2 + 15 * HOUR,
        }),
        // Cancelling a delivered order is not a transition: nothing changes.
        OrderEvent::Cancelled(OrderCancelled {
            order_id: a.to_string(),
            reason: "too late".into(),
            cancelled_at: DAY2 + 16 * HOUR,
        }),
    ];
    shop::publish(&app, &app.producer(), &events).await;
    let projector = app.app.projector().await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone()));
    wait_until_applied(&app, shop::messages(&events)).await;
    stop.cancel();
    running.await.unwrap().unwrap();
    let pool = &app.app.pool;

    let orders: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT order_id, status, refunded_minor FROM read_model.orders ORDER BY order_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        orders,
        [
            (a, "refunded".to_owned(), 2000),
            (b, "cancelled".to_owned(), 0),
            (c, "paid".to_owned(), 0)
        ]
    );

    let lines: Vec<(Uuid, i32, String, i32, i64, String)> = sqlx::query_as(
        "SELECT order_id, line_no, sku, quantity, unit_price_minor, currency::text
         FROM read_model.order_lines ORDER BY order_id, line_no",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        lines,
        [
            (a, 1, "SKU-1".into(), 2, 500, "EUR".into()),
            (a, 2, "SKU-2".into(), 1, 1000, "EUR".into()),
            (b, 1, "SKU-1".into(), 1, 500, "EUR".into()),
            (c, 1, "SKU-2".into(), 3, 1000, "USD".into()),
        ]
    );

    type TimelineRow = (
        Uuid,
        String,
        DateTime<Utc>,
        Option<String>,
        Option<i64>,
        Option<String>,
    );
    let timeline: Vec<TimelineRow> = sqlx::query_as(
        "SELECT order_id, event_type, occurred_at, reference, amount_minor, currency::text
         FROM read_model.order_timeline ORDER BY order_id, occurred_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let eur = || Some("EUR".to_owned());
    assert_eq!(
        timeline,
        [
            (
                a,
                "OrderPlaced".into(),
                at(DAY1 + 10 * HOUR),
                None,
                Some(2000),
                eur()
            ),
            (
                a,
                "OrderPaid".into(),
                at(DAY1 + 11 * HOUR),
                Some(format!("pay-{a}")),
                Some(2000),
                eur()
            ),
            (
                a,
                "OrderShipped".into(),
                at(DAY1 + 13 * HOUR),
                Some("shp-a".into()),
                None,
                None
            ),
            (
                a,
                "OrderDelivered".into(),
                at(DAY2 + 13 * HOUR),
                Some("shp-a".into()),
                None,
                None
            ),
            (
                a,
                "OrderRefunded".into(),
                at(DAY2 + 15 * HOUR),
                Some("ref-a".into()),
                Some(2000),
                eur()
            ),
            (
                b,
                "OrderPlaced".into(),
                at(DAY1 + 12 * HOUR),
                None,
                Some(500),
                eur()
            ),
            (
                b,
                "OrderCancelled".into(),
                at(DAY1 + 12 * HOUR + HOUR / 2),
                Some("changed my mind".into()),
                None,
                None
            ),
            (
                c,
                "OrderPlaced".into(),
                at(DAY2 + 9 * HOUR),
                None,
                Some(3000),
                Some("USD".into())
            ),
            (
                c,
                "OrderPaid".into(),
                at(DAY2 + 10 * HOUR),
                Some(format!("pay-{c}")),
                Some(3000),
                Some("USD".into())
            ),
        ],
        "one row per change; the repeated payment and the late cancellation are not changes"
    );

    let daily: Vec<(NaiveDate, String, i32, i64, i32, i64, i64)> = sqlx::query_as(
        "SELECT day, currency::text, orders, gross_minor, refunds, refunded_minor, net_minor
         FROM read_model.daily_sales ORDER BY day, currency",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let (d1, d2) = (
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        NaiveDate::from_ymd_opt(2026, 1, 2).unwrap(),
    );
    assert_eq!(
        daily,
        [
            (d1, "EUR".into(), 1, 2000, 0, 0, 2000),
            (d2, "EUR".into(), 0, 0, 1, 2000, -2000),
            (d2, "USD".into(), 1, 3000, 0, 0, 3000),
        ],
        "sales on the day of payment, refunds on the day of refund"
    );

    let products: Vec<(String, String, i32, i64, i64)> = sqlx::query_as(
        "SELECT sku, currency::text, orders, units, revenue_minor
         FROM read_model.product_sales ORDER BY sku, currency",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        products,
        [
            ("SKU-1".into(), "EUR".into(), 1, 2, 1000),
            ("SKU-2".into(), "EUR".into(), 1, 1, 1000),
            ("SKU-2".into(), "USD".into(), 1, 3, 3000),
        ],
        "paid orders only: the cancelled order's SKU-1 is not a sale"
    );

    type CustomerRow = (
        Uuid,
        String,
        i32,
        i32,
        i32,
        i64,
        i64,
        i64,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let mut customers: Vec<CustomerRow> = sqlx::query_as(
        "SELECT customer_id, currency::text, orders, paid_orders, cancelled_orders, paid_minor,
                refunded_minor, lifetime_value_minor, first_order_at, last_order_at
         FROM read_model.customer_summary",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    customers.sort_by_key(|row| row.0 != c1);
    assert_eq!(
        customers,
        [
            (
                c1,
                "EUR".into(),
                2,
                1,
                1,
                2000,
                2000,
                0,
                at(DAY1 + 10 * HOUR),
                at(DAY1 + 12 * HOUR)
            ),
            (
                c2,
                "USD".into(),
                1,
                1,
                0,
                3000,
                0,
                3000,
                at(DAY2 + 9 * HOUR),
                at(DAY2 + 9 * HOUR)
            ),
        ]
    );

    type FulfilmentRow = (
        Uuid,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<f64>,
        Option<f64>,
    );
    let fulfilment: Vec<FulfilmentRow> = sqlx::query_as(
        "SELECT order_id, delivered_at, carrier, paid_to_shipped_seconds, shipped_to_delivered_seconds
         FROM read_model.fulfilment ORDER BY order_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        fulfilment,
        [
            (
                a,
                Some(at(DAY2 + 13 * HOUR)),
                Some("DHL".into()),
                Some(7200.0),
                Some(86_400.0)
            ),
            (c, None, None, None, None),
        ]
    );
    app.stop().await.unwrap();
}

/// The orders projection, counting the events it applies, and crashing
/// its process at a chosen point of a chosen batch.
struct Crashing {
    inner: OrdersProjection,
    batches: AtomicUsize,
    applied: Arc<AtomicUsize>,
    crash_on: Option<usize>,
    after_writes: bool,
}

impl Crashing {
    /// The projection, never crashing, counting into `applied`.
    fn counting(inner: OrdersProjection, applied: Arc<AtomicUsize>) -> Self {
        Self {
            inner,
            batches: AtomicUsize::new(0),
            applied,
            crash_on: None,
            after_writes: false,
        }
    }
}

impl Handler for Crashing {
    type Event = OrderEvent;

    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn decode(&self, message: &OwnedMessage) -> Result<Option<OrderEvent>, DecodeError> {
        self.inner.decode(message).await
    }

    fn occurred_at(&self, event: &OrderEvent) -> Option<DateTime<Utc>> {
        self.inner.occurred_at(event)
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: Vec<Envelope<OrderEvent>>,
    ) -> anyhow::Result<()> {
        let batch = Some(self.batches.fetch_add(1, Ordering::SeqCst));
        if batch == self.crash_on && !self.after_writes {
            // The previous batch has just committed: crash before anything else.
            panic!("crash right after a commit");
        }
        let n = events.len();
        self.inner.apply(conn, events).await?;
        if batch == self.crash_on {
            panic!("crash after the upserts, before the commit");
        }
        self.applied.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }
}

/// Runs a projector that crashes on its third batch (at `after_writes` or
/// right after the second commit), then a fresh one; the read models must
/// equal the expected ones exactly.
async fn crash_and_resume(after_writes: bool) {
    let mut settings = test_settings().await;
    settings.projector.max_batch = 50;
    let app = TestApp::spawn_with(settings, &[]).await;
    let events = shop::traffic(400, 7);
    shop::publish(&app, &app.producer(), &events).await;

    let group = app.app.settings.projector.group_id.clone().unwrap();
    let wiring = app.app.wiring(&group, vec![app.app.topic(Topic::Orders)]);
    let crashing = Consumer::new(
        app.app.pool.clone(),
        Crashing {
            crash_on: Some(2),
            after_writes,
            ..Crashing::counting(
                OrdersProjection::new(app.app.order_decoder().await.unwrap()),
                Arc::default(),
            )
        },
        &wiring,
        app.app.settings.projector.clone(),
    )
    .unwrap();
    let crashed = tokio::spawn(crashing.run(CancellationToken::new())).await;
    assert!(
        crashed.unwrap_err().is_panic(),
        "the first projector crashed"
    );
    let applied_before = app.stored_offsets().await;
    assert!(
        applied_before > 0 && applied_before < shop::messages(&events),
        "the crash came mid-stream ({applied_before} applied)"
    );

    let projector = app.app.projector().await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone()));
    wait_until_applied(&app, shop::messages(&events)).await;
    stop.cancel();
    let resumed = running.await.unwrap().unwrap();
    assert_eq!(
        resumed.applied as i64,
        shop::messages(&events) - applied_before,
        "the second projector applies exactly what the first did not commit"
    );
    shop::assert_read_models_equal(&app, &shop::expected(&app, &events).await).await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_upserts_before_the_commit_applies_every_event_once() {
    crash_and_resume(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_a_commit_applies_every_event_once() {
    crash_and_resume(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_over_six_partitions_one_killed_under_load_give_the_expected_totals() {
    let mut settings = test_settings().await;
    settings.kafka.partitions = 6;
    settings.projector.max_batch = 100;
    let app = Arc::new(TestApp::spawn_with(settings, &[]).await);
    let events = shop::traffic(3000, 11);

    let group = app.app.settings.projector.group_id.clone().unwrap();
    let wiring = app.app.wiring(&group, vec![app.app.topic(Topic::Orders)]);
    let instance = |applied: Arc<AtomicUsize>| {
        let app = app.clone();
        let wiring = wiring.clone();
        async move {
            let projection = OrdersProjection::new(app.app.order_decoder().await.unwrap());
            Consumer::new(
                app.app.pool.clone(),
                Crashing::counting(projection, applied),
                &wiring,
                app.app.settings.projector.clone(),
            )
            .unwrap()
        }
    };
    let (doomed_applied, survivor_applied) = (Arc::default(), Arc::default());
    let doomed = tokio::spawn(
        instance(Arc::clone(&doomed_applied))
            .await
            .run(CancellationToken::new()),
    );
    let stop = CancellationToken::new();
    let survivor = tokio::spawn(
        instance(Arc::clone(&survivor_applied))
            .await
            .run(stop.clone()),
    );

    // Load in small slices; once both instances have applied events (the
    // second one's join is a rebalance, slow on a loaded machine), kill one
    // (no shutdown, no leaving the group) while the load goes on.
    let producer = app.producer();
    let mut slices = events.chunks(events.len().div_ceil(100));
    let mut killed = false;
    for slice in slices.by_ref() {
        shop::publish(&app, &producer, slice).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if doomed_applied.load(Ordering::SeqCst) > 0 && survivor_applied.load(Ordering::SeqCst) > 0
        {
            doomed.abort();
            killed = true;
            break;
        }
    }
    assert!(
        killed,
        "both instances applied events before the kill ({doomed_applied:?}, {survivor_applied:?})"
    );
    let rest: Vec<&[OrderEvent]> = slices.collect();
    assert!(!rest.is_empty(), "load goes on after the kill");
    for slice in rest {
        shop::publish(&app, &producer, slice).await;
    }
    wait_until_applied(&app, shop::messages(&events)).await;
    stop.cancel();
    survivor.await.unwrap().unwrap();
    let partitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM consumer.offsets WHERE consumer = 'orders' AND next_offset > 0",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(partitions, 6, "all six partitions were consumed");
    shop::assert_read_models_equal(&app, &shop::expected(&app, &events).await).await;
    Arc::try_unwrap(app).ok().unwrap().stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_events_flow_equals_the_incremental_read_models_and_swaps_atomically() {
    let mut settings = test_settings().await;
    settings.projector.max_batch = 200;
    let app = Arc::new(TestApp::spawn_with(settings, &[]).await);
    let events = shop::traffic(1500, 23);
    let (before, during) = events.split_at(events.len() * 2 / 3);
    let producer = app.producer();
    shop::publish(&app, &producer, before).await;

    let projector = app.app.projector().await.unwrap();
    let stop = CancellationToken::new();
    let live = tokio::spawn(projector.run(stop.clone()));
    wait_until_applied(&app, shop::messages(before)).await;
    // An analyst's grant on a live table must survive the swap.
    let role = format!("reader_{}", Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} NOLOGIN")))
        .execute(&app.app.pool)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT SELECT ON read_model.daily_sales TO {role}"
    )))
    .execute(&app.app.pool)
    .await
    .unwrap();

    // The rest flows in while the rebuild replays.
    let publishing = {
        let app = app.clone();
        let during = during.to_vec();
        tokio::spawn(async move {
            let producer = app.producer();
            for slice in during.chunks(100) {
                shop::publish(&app, &producer, slice).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut progress = Vec::new();
    let outcome = tributary_projector::rebuild::rebuild(
        &app.app.rebuild_deployment().await.unwrap(),
        "orders",
        |p| progress.push((p.applied, p.target)),
    )
    .await
    .unwrap();
    assert!(!progress.is_empty(), "progress was reported");
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress only grows: {progress:?}"
    );
    publishing.await.unwrap();

    // The live projector carries on into the swapped-in tables.
    wait_until_applied(&app, shop::messages(&events)).await;
    stop.cancel();
    live.await.unwrap().unwrap();
    shop::assert_read_models_equal(&app, &shop::expected(&app, &events).await).await;
    assert!(outcome.applied >= shop::messages(before));

    let finished: (Option<String>, i64) = sqlx::query_as(
        "SELECT outcome, (SELECT count(*) FROM consumer.offsets WHERE consumer LIKE 'orders@rebuild-%')
         FROM projection.rebuilds WHERE rebuild_id = $1",
    )
    .bind(outcome.rebuild_id)
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(finished, (Some("swapped".into()), 0));
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%' OR nspname LIKE 'retired\\_%'",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0, "the build and retired schemas are gone");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'read_model' AND tablename = 'orders' ORDER BY 1",
    )
    .fetch_all(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "orders_by_customer",
            "orders_by_placed_at",
            "orders_by_status",
            "orders_pkey"
        ],
        "the swapped-in table keeps the migration's index names"
    );
    let granted: bool =
        sqlx::query_scalar("SELECT has_table_privilege($1, 'read_model.daily_sales', 'SELECT')")
            .bind(&role)
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert!(granted, "the analyst's grant was carried over");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP OWNED BY {role}; DROP ROLE {role}"
    )))
    .execute(&app.app.pool)
    .await
    .ok();
    Arc::try_unwrap(app).ok().unwrap().stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_an_unknown_projection_names_the_known_ones() {
    let app = TestApp::spawn(&[]).await;
    let error = tributary_projector::rebuild::rebuild(
        &app.app.rebuild_deployment().await.unwrap(),
        "ordres",
        |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "there is no projection \"ordres\" (projections: orders)"
    );
    app.stop().await.unwrap();
}
