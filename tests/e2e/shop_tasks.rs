//! The shop's tasks over the whole system: an invoice when an order is
//! paid, reminders of unpaid orders fanned out per customer, and the daily
//! sales report, e-mailed.

use std::time::Duration;

use serde_json::{Value, json};
use tributary::Role;
use tributary_schemas::Topic;
use tributary_shop_tasks::{
    DailyReport, DailyReportArgs, InvoiceArgs, IssueInvoice, UnpaidReminders, UnpaidRemindersArgs,
};
use tributary_tasks::{Enqueue, Task, results};
use uuid::Uuid;

use crate::helpers::{SmtpSink, TestApp, captured, eventually, ingest, order_body, test_settings};

/// Every role the shop's tasks involve.
const SHOP: [Role; 6] = [
    Role::Api,
    Role::Relay,
    Role::Projector,
    Role::ProcessManager,
    Role::Notifier,
    Role::Worker,
];

/// Produces a task straight to its queue and waits until it has finished.
async fn run<T: Task>(app: &TestApp, args: &T::Args) -> results::TaskRow {
    let enqueuer = app.app.enqueuer().await.unwrap();
    let task_id = enqueuer
        .produce(&Enqueue::new::<T>(args).unwrap().max_attempts(3))
        .await
        .unwrap();
    finished(app, task_id).await
}

async fn finished(app: &TestApp, task_id: Uuid) -> results::TaskRow {
    eventually(Duration::from_secs(60), "the task to finish", || async {
        let row = results::get(&app.app.pool, task_id).await.unwrap()?;
        matches!(row.state.as_str(), "succeeded" | "failed" | "dead").then_some(row)
    })
    .await
}

/// Waits until the read model shows `order_id` in `status`.
async fn projected(app: &TestApp, order_id: &str, status: &str) {
    eventually(
        Duration::from_secs(60),
        "the order in the read model",
        || async {
            let found: Option<String> = sqlx::query_scalar(
                "SELECT status FROM read_model.orders WHERE order_id = $1::uuid",
            )
            .bind(order_id)
            .fetch_optional(&app.app.pool)
            .await
            .unwrap();
            (found.as_deref() == Some(status)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_gets_one_invoice() {
    let app = TestApp::spawn(&SHOP).await;
    let customer = app.register_customer("ada@example.com", "Ada").await;
    let order_id = app
        .place_order(&order_body(
            customer,
            &[("TEA-1", 3, 450), ("MUG", 1, 1200)],
        ))
        .await
        .to_string();
    ingest(
        &app,
        Topic::Payments,
        "payments.PaymentCaptured",
        &order_id,
        captured(&order_id, 2550, "EUR"),
    )
    .await;

    let (number, lines, total, paid): (String, Value, i64, i64) =
        eventually(Duration::from_secs(60), "the invoice", || async {
            sqlx::query_as(
                "SELECT invoice_number, lines, total_minor, paid_minor FROM shop_tasks.invoices
                 WHERE order_id = $1::uuid",
            )
            .bind(&order_id)
            .fetch_optional(&app.app.pool)
            .await
            .unwrap()
        })
        .await;
    assert_eq!(number, "INV-00000001");
    assert_eq!((total, paid), (2550, 2550));
    assert_eq!(
        lines,
        json!([
            {"sku": "TEA-1", "quantity": 3, "unit_price_minor": 450, "amount_minor": 1350},
            {"sku": "MUG", "quantity": 1, "unit_price_minor": 1200, "amount_minor": 1200},
        ])
    );

    // A re-delivered invoice task finds it issued and issues nothing.
    let again = run::<IssueInvoice>(
        &app,
        &InvoiceArgs {
            order_id: order_id.clone(),
            payment_id: "pay-1".into(),
            amount_minor: 2550,
            currency: "EUR".into(),
            paid_at: 1_732_406_400_000,
        },
    )
    .await;
    assert_eq!(again.state, "succeeded");
    assert_eq!(again.result.unwrap()["already_issued"], true);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM shop_tasks.invoices")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_orders_are_reminded_once_through_a_task_per_customer() {
    let mut settings = test_settings().await;
    let sink = SmtpSink::start(&mut settings).await;
    let app = TestApp::spawn_with(settings, &SHOP).await;
    let ada = app.register_customer("ada@example.com", "Ada").await;
    let alan = app.register_customer("alan@example.com", "Alan").await;
    let grace = app.register_customer("grace@example.com", "Grace").await;
    let mut placed = Vec::new();
    for customer in [ada, ada, alan, grace] {
        let id = app
            .place_order(&order_body(customer, &[("TEA-1", 1, 500)]))
            .await;
        placed.push(id.to_string());
    }
    // Grace paid: she is not reminded.
    ingest(
        &app,
        Topic::Payments,
        "payments.PaymentCaptured",
        &placed[3],
        captured(&placed[3], 500, "EUR"),
    )
    .await;
    for order in &placed[..3] {
        projected(&app, order, "placed").await;
    }
    projected(&app, &placed[3], "paid").await;

    let fan_out = run::<UnpaidReminders>(
        &app,
        &UnpaidRemindersArgs {
            older_than_hours: 0,
        },
    )
    .await;
    assert_eq!(fan_out.state, "succeeded", "{fan_out:?}");
    assert_eq!(fan_out.result.as_ref().unwrap()["customers"], 2);
    let done = eventually(Duration::from_secs(60), "the chord's callback", || async {
        let rows = results::list(
            &app.app.pool,
            &results::Filter {
                name: Some("shop.unpaid_reminders.done".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        rows.into_iter().find(|row| row.state == "succeeded")
    })
    .await;
    assert_eq!(
        done.result.unwrap(),
        json!({"customers": 2, "succeeded": 2, "failed": 0, "orders_reminded": 3})
    );
    let reminders = sink
        .wait_for(2, "the reminders", |m| m.contains("waiting for payment"))
        .await;
    let to_ada = reminders
        .iter()
        .find(|m| m.contains("ada@example.com"))
        .unwrap();
    assert!(
        to_ada.contains("Your 2 orders are waiting for payment"),
        "{to_ada}"
    );
    assert!(
        to_ada.contains(&placed[0]) && to_ada.contains(&placed[1]),
        "{to_ada}"
    );
    assert!(to_ada.contains("Hello Ada"), "{to_ada}");
    let to_alan = reminders
        .iter()
        .find(|m| m.contains("alan@example.com"))
        .unwrap();
    assert!(
        to_alan.contains("Your order is waiting for payment"),
        "{to_alan}"
    );
    assert!(!reminders.iter().any(|m| m.contains("grace@example.com")));

    // Every order is reminded once: the next run finds nothing to do.
    let next = run::<UnpaidReminders>(
        &app,
        &UnpaidRemindersArgs {
            older_than_hours: 0,
        },
    )
    .await;
    assert_eq!(next.result.unwrap()["customers"], 0);
    let reminded: i64 = sqlx::query_scalar("SELECT count(*) FROM shop_tasks.reminders")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(reminded, 3);
    assert_eq!(
        sink.messages()
            .iter()
            .filter(|m| m.contains("waiting for payment"))
            .count(),
        2
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_sales_report_is_emailed() {
    let mut settings = test_settings().await;
    let sink = SmtpSink::start(&mut settings).await;
    settings.notifier.email.reports_to = vec!["Analysts <analysts@example.com>".into()];
    let app = TestApp::spawn_with(
        settings,
        &[
            Role::Api,
            Role::Relay,
            Role::Projector,
            Role::ProcessManager,
            Role::Worker,
        ],
    )
    .await;
    let customer = app.register_customer("ada@example.com", "Ada").await;
    let order_id = app
        .place_order(&order_body(customer, &[("TEA-1", 2, 1000)]))
        .await
        .to_string();
    ingest(
        &app,
        Topic::Payments,
        "payments.PaymentCaptured",
        &order_id,
        captured(&order_id, 2000, "EUR"),
    )
    .await;
    projected(&app, &order_id, "paid").await;
    // The payment was captured on 2024-11-24 (UTC).
    let report = run::<DailyReport>(
        &app,
        &DailyReportArgs {
            day: Some("2024-11-24".into()),
        },
    )
    .await;
    assert_eq!(report.state, "succeeded", "{report:?}");
    let result = report.result.unwrap();
    assert_eq!(result["rows"][0]["net_minor"], 2000);
    let mail = sink
        .wait_for(1, "the report", |m| {
            m.contains("Sales report for 2024-11-24")
        })
        .await;
    assert!(mail[0].contains("analysts@example.com"), "{}", mail[0]);
    assert!(
        mail[0].contains("EUR: 1 orders paid, 20.00 EUR gross"),
        "{}",
        mail[0]
    );

    let bad = run::<DailyReport>(
        &app,
        &DailyReportArgs {
            day: Some("yesterday-ish".into()),
        },
    )
    .await;
    assert_eq!(bad.state, "failed");
    assert_eq!(bad.attempts, 1, "a bad day is not retried");
    assert!(bad.error.unwrap().contains("day"));
    app.stop().await.unwrap();
}
