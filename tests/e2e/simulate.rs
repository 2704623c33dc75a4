//! The upstream simulators drive orders through the process manager, as a
//! payment provider and a warehouse would.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tributary::{
    Role,
    simulate::{self, SimulateArgs, Upstream},
};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, order_body};

async fn orders_in(app: &TestApp, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM commands.orders WHERE status = $1")
        .bind(status)
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_payments_and_shipments_deliver_placed_orders() {
    let app = TestApp::spawn(&[Role::Api, Role::Relay, Role::ProcessManager]).await;
    for i in 0..5 {
        app.place_order(&order_body(Uuid::now_v7(), &[("TEA-1", 1 + i, 1250)]))
            .await;
    }
    let args = |upstream| SimulateArgs {
        upstream,
        rate: 200,
        failure_ratio: 0.0,
        orders: Some(5),
    };
    let published = simulate::run(
        &app.app,
        &args(Upstream::Payments),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(published, 5);
    eventually(Duration::from_secs(30), "five orders paid", || async {
        (orders_in(&app, "paid").await == 5).then_some(())
    })
    .await;

    let published = simulate::run(
        &app.app,
        &args(Upstream::Shipments),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(published, 10, "a dispatch and a delivery per order");
    eventually(Duration::from_secs(30), "five orders delivered", || async {
        (orders_in(&app, "delivered").await == 5).then_some(())
    })
    .await;
    app.stop().await.unwrap();
}
