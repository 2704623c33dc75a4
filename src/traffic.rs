//! Shop traffic as order events: orders with realistic lives (paid,
//! shipped, delivered, cancelled, refunded, abandoned), interleaved by time.
//! What the benchmark drains and the end-to-end tests check the read models
//! against.

use rand::{Rng, SeedableRng, rngs::StdRng};
use tributary_registry::ContractIds;
use tributary_schemas::{
    Event, framing,
    orders::{
        OrderCancelled, OrderDelivered, OrderEvent, OrderLine, OrderPaid, OrderPlaced,
        OrderRefunded, OrderShipped,
    },
};
use uuid::Uuid;

/// `orders` orders with their lives, interleaved by time, with some events
/// repeated (as a relay may after a crash). Per order, events are in order.
pub fn orders(orders: usize, seed: u64) -> Vec<OrderEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = 1_767_225_600_000_i64; // 2026-01-01T00:00:00Z
    let customers: Vec<String> = (0..orders.div_ceil(4).max(1))
        .map(|_| Uuid::now_v7().to_string())
        .collect();
    let mut timed: Vec<(i64, usize, OrderEvent)> = Vec::new();
    let push = |at: i64, event: OrderEvent, timed: &mut Vec<(i64, usize, OrderEvent)>| {
        let n = timed.len();
        timed.push((at, n, event));
    };
    for _ in 0..orders {
        let order_id = Uuid::now_v7().to_string();
        let currency = if rng.random_bool(0.7) { "EUR" } else { "USD" };
        let lines: Vec<OrderLine> = (0..rng.random_range(1..=3))
            .map(|_| OrderLine {
                sku: format!("SKU-{}", rng.random_range(1..=8)),
                quantity: rng.random_range(1..=4),
                unit_price_minor: rng.random_range(100..=5_000),
            })
            .collect();
        let total: i64 = lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_minor)
            .sum();
        // Spread over three days, so daily sales have several rows.
        let mut at = start + rng.random_range(0..3 * 86_400_000);
        push(
            at,
            OrderEvent::Placed(OrderPlaced {
                order_id: order_id.clone(),
                customer_id: customers[rng.random_range(0..customers.len())].clone(),
                currency: currency.into(),
                lines,
                total_minor: total,
                placed_at: at,
                channel: ["web", "app", "api"]
                    .get(rng.random_range(0..4))
                    .map(|c| (*c).into()),
            }),
            &mut timed,
        );
        let mut step = |rng: &mut StdRng| {
            at += rng.random_range(60_000..6 * 3_600_000);
            at
        };
        if rng.random_bool(0.15) {
            let at = step(&mut rng);
            push(
                at,
                OrderEvent::Cancelled(OrderCancelled {
                    order_id,
                    reason: "changed my mind".into(),
                    cancelled_at: at,
                }),
                &mut timed,
            );
            continue;
        }
        if rng.random_bool(0.1) {
            continue; // never paid
        }
        let paid_at = step(&mut rng);
        push(
            paid_at,
            OrderEvent::Paid(OrderPaid {
                order_id: order_id.clone(),
                payment_id: format!("pay-{order_id}"),
                amount_minor: total,
                currency: currency.into(),
                paid_at,
            }),
            &mut timed,
        );
        let shipment_id = format!("shp-{order_id}");
        if rng.random_bool(0.8) {
            let at = step(&mut rng);
            push(
                at,
                OrderEvent::Shipped(OrderShipped {
                    order_id: order_id.clone(),
                    shipment_id: shipment_id.clone(),
                    carrier: ["DHL", "UPS", "PostNL"][rng.random_range(0..3)].into(),
                    shipped_at: at,
                }),
                &mut timed,
            );
            if rng.random_bool(0.8) {
                let at = step(&mut rng);
                push(
                    at,
                    OrderEvent::Delivered(OrderDelivered {
                        order_id: order_id.clone(),
                        shipment_id,
                        delivered_at: at,
                    }),
                    &mut timed,
                );
            }
        }
        if rng.random_bool(0.1) {
            let at = step(&mut rng);
            push(
                at,
                OrderEvent::Refunded(OrderRefunded {
                    order_id: order_id.clone(),
                    refund_id: format!("ref-{order_id}"),
                    amount_minor: total / 2,
                    currency: currency.into(),
                    refunded_at: at,
                }),
                &mut timed,
            );
        }
    }
    timed.sort_by_key(|(at, n, _)| (*at, *n));
    let mut events = Vec::with_capacity(timed.len() + timed.len() / 20);
    for (_, _, event) in timed {
        // One event in twenty is delivered twice in a row.
        if rng.random_bool(0.05) {
            events.push(event.clone());
        }
        events.push(event);
    }
    events
}

/// The Confluent-framed value of `event`, with its registered schema id.
pub fn frame(ids: &ContractIds, event: &OrderEvent) -> anyhow::Result<Vec<u8>> {
    fn encode<E: Event>(ids: &ContractIds, event: &E) -> anyhow::Result<Vec<u8>> {
        let id = ids
            .id_of(E::FULL_NAME)
            .ok_or_else(|| anyhow::anyhow!("{} is not registered", E::FULL_NAME))?;
        Ok(framing::encode(id, event)?)
    }
    match event {
        OrderEvent::Placed(e) => encode(ids, e),
        OrderEvent::Cancelled(e) => encode(ids, e),
        OrderEvent::Paid(e) => encode(ids, e),
        OrderEvent::Shipped(e) => encode(ids, e),
        OrderEvent::Delivered(e) => encode(ids, e),
        OrderEvent::Refunded(e) => encode(ids, e),
    }
}
