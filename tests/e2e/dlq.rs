//! `tributary ctl dlq list|show|redrive` over the process manager's dead
//! letters: listed and filtered, decoded through the registry, redriven once
//! when they apply, and stopped by the loop guard when they keep failing.

use std::time::Duration;

use base64::Engine as _;
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::FutureRecord,
};
use serde_json::{Value, json};
use tributary::Role;
use tributary_consumer::dead_letter::{DlqId, Filter, Listed, Redrive, RedriveSummary, Redriven};
use tributary_schemas::Topic;
use uuid::Uuid;

use crate::helpers::{TestApp, captured, eventually, ingest, order_body, status, tributary};

fn dispatched(order_id: &str) -> Value {
    json!({"shipment_id": "shp-1", "order_id": order_id, "carrier": "DHL", "tracking_number": "JD1",
           "dispatched_at": 1_732_406_500_000_i64})
}

fn group(app: &TestApp) -> String {
    app.app.settings.process_manager.group_id.clone().unwrap()
}

/// Lists until exactly `expected` dead letters match (the dead-letter topic
/// fills asynchronously, through the outbox and the relay). Under the whole
/// suite's load one listing of every group can take tens of seconds (each
/// read may wait up to 30 s for tansu), hence the long deadline.
async fn list_until(app: &TestApp, filter: &Filter, expected: usize) -> Vec<Listed> {
    eventually(
        Duration::from_secs(150),
        &format!("{expected} dead letters listed"),
        || async {
            let listed = app
                .app
                .dead_letter_admin()
                .unwrap()
                .list(filter)
                .await
                .ok()?;
            (listed.len() == expected).then_some(listed)
        },
    )
    .await
}

async fn redrive(app: &TestApp, options: &Redrive) -> (Vec<Redriven>, RedriveSummary) {
    let mut outcomes = Vec::new();
    let summary = app
        .app
        .dead_letter_admin()
        .unwrap()
        .redrive(options, |o| outcomes.push(o.clone()), |_| {})
        .await
        .expect("the redrive runs");
    (outcomes, summary)
}

fn options(app: &TestApp, max_redrives: u32) -> Redrive {
    Redrive {
        group: group(app),
        filter: Filter::default(),
        rate: 50,
        max_redrives,
        dry_run: false,
    }
}

async fn redrives_recorded(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM consumer.redrives")
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_once_when_they_apply() {
    let app = TestApp::spawn(&[Role::Api, Role::Relay, Role::ProcessManager]).await;
    let order_id = app
        .place_order(&order_body(
            Uuid::now_v7(),
            &[("TEA-1", 2, 1250), ("MUG-2", 1, 899)],
        ))
        .await
        .to_string();
    let unknown = Uuid::now_v7().to_string();
    let payments = app.app.topic(Topic::Payments);
    let shipments = app.app.topic(Topic::Shipments);
    let dlq_topic = app.app.process_manager_dead_letters();

    // A payment for an order that does not exist, and a shipment that
    // overtook its order's payment (different topics: no order between them).
    ingest(
        &app,
        Topic::Payments,
        "payments.PaymentCaptured",
        &unknown,
        captured(&unknown, 3399, "EUR"),
    )
    .await;
    ingest(
        &app,
        Topic::Shipments,
        "warehouse.ShipmentDispatched",
        &order_id,
        dispatched(&order_id),
    )
    .await;
    let all = list_until(&app, &Filter::default(), 2).await;
    for letter in &all {
        assert_eq!(letter.group, group(&app));
        assert_eq!(letter.id.topic, dlq_topic);
        assert_eq!(letter.redrive_count, 0);
        assert!(letter.dead_lettered_at.is_some(), "{letter:?}");
    }
    let payment = all
        .iter()
        .find(|l| l.original_topic.as_deref() == Some(payments.as_str()))
        .expect("the payment's dead letter");
    let shipment = all
        .iter()
        .find(|l| l.original_topic.as_deref() == Some(shipments.as_str()))
        .expect("the shipment's dead letter");
    assert_eq!(
        payment.error.as_deref(),
        Some(format!("order {unknown} does not exist").as_str())
    );
    assert!(
        shipment
            .error
            .as_deref()
            .unwrap()
            .contains("cannot become shipped"),
        "{shipment:?}"
    );
    assert_eq!(payment.key.as_deref(), Some(unknown.as_str()));
    assert_eq!(payment.original_offset, Some(0));

    // Filters: by error (case-insensitive), by original topic (full or
    // unprefixed name), by group, by time, and a limit.
    let only = |filter: Filter| {
        let app = &app;
        async move {
            let listed = app
                .app
                .dead_letter_admin()
                .unwrap()
                .list(&filter)
                .await
                .unwrap();
            listed.iter().map(|l| l.id.to_string()).collect::<Vec<_>>()
        }
    };
    let error = Filter {
        error: Some("DOES NOT EXIST".into()),
        ..Filter::default()
    };
    assert_eq!(only(error).await, [payment.id.to_string()]);
    let by_topic = Filter {
        topic: Some(Topic::Shipments.name().into()),
        ..Filter::default()
    };
    assert_eq!(only(by_topic).await, [shipment.id.to_string()]);
    let by_full_topic = Filter {
        topic: Some(payments.clone()),
        ..Filter::default()
    };
    assert_eq!(only(by_full_topic).await, [payment.id.to_string()]);
    let projector = Filter {
        groups: vec![app.app.settings.projector.group_id.clone().unwrap()],
        ..Filter::default()
    };
    assert!(only(projector).await.is_empty());
    let future = Filter {
        since: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ..Filter::default()
    };
    assert!(only(future).await.is_empty());
    let past = Filter {
        until: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        since: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        ..Filter::default()
    };
    assert_eq!(only(past).await.len(), 2);
    let limited = Filter {
        limit: Some(1),
        ..Filter::default()
    };
    assert_eq!(only(limited).await.len(), 1);

    // Show decodes the value with its writer schema from the registry.
    let shown = app
        .app
        .dead_letter_admin()
        .unwrap()
        .show(&payment.id)
        .await
        .unwrap();
    assert_eq!(shown.schema.as_deref(), Some("payments.PaymentCaptured"));
    assert_eq!(shown.undecoded, None);
    assert_eq!(shown.value_base64, None);
    let value = shown.value.expect("a decoded value");
    assert_eq!(value["order_id"], unknown.as_str());
    assert_eq!(value["amount_minor"], 3399);
    assert_eq!(value["currency"], "EUR");
    assert_eq!(shown.key.as_deref(), Some(unknown.as_str()));
    assert_eq!(
        shown.headers["original_topic"].as_deref(),
        Some(payments.as_str())
    );
    assert_eq!(
        shown.headers["error"].as_deref(),
        Some(format!("order {unknown} does not exist").as_str())
    );
    assert_eq!(
        shown.headers["consumer_group"].as_deref(),
        app.app.settings.process_manager.group_id.as_deref(),
        "the process manager's dead letters carry the runtime's headers"
    );
    assert!(
        shown.headers.contains_key("correlation_id"),
        "and the original's: {:?}",
        shown.headers
    );

    // The order is paid now, so the shipment applies.
    ingest(
        &app,
        Topic::Payments,
        "payments.PaymentCaptured",
        &order_id,
        captured(&order_id, 3399, "EUR"),
    )
    .await;
    eventually(Duration::from_secs(30), "the order paid", || async {
        (status(&app, &order_id).await.0 == "paid").then_some(())
    })
    .await;

    let shipments_only = Redrive {
        filter: Filter {
            topic: Some(Topic::Shipments.name().into()),
            ..Filter::default()
        },
        ..options(&app, 3)
    };
    // A dry run says what it would do, and does nothing.
    let (outcomes, summary) = redrive(
        &app,
        &Redrive {
            dry_run: true,
            ..shipments_only.clone()
        },
    )
    .await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        (outcomes[0].outcome, outcomes[0].redrive_count),
        ("would_redrive", Some(1))
    );
    assert_eq!((summary.would_redrive, summary.redriven), (1, 0));
    assert_eq!(redrives_recorded(&app).await, 0);

    let (outcomes, summary) = redrive(&app, &shipments_only).await;
    assert_eq!(summary.scanned, 2, "{summary:?}");
    assert_eq!((summary.matched, summary.redriven), (1, 1), "{summary:?}");
    assert!(summary.skipped.is_empty(), "{summary:?}");
    let sent = &outcomes[0];
    assert_eq!(sent.id, shipment.id);
    assert_eq!(sent.outcome, "redriven");
    assert_eq!(sent.target_topic.as_deref(), Some(shipments.as_str()));
    assert_eq!(sent.redrive_count, Some(1));
    eventually(Duration::from_secs(30), "the order shipped", || async {
        (status(&app, &order_id).await == ("shipped".to_owned(), 3)).then_some(())
    })
    .await;

    // The copy: the original key and value, no dead-letter headers, the redrive's own.
    let records = app.read_topic_named(&shipments, 2).await;
    let copy = records
        .iter()
        .find(|r| r.headers.get("redriven_from") == Some(&shipment.id.to_string()))
        .expect("the redriven copy");
    let original = records
        .iter()
        .find(|r| !r.headers.contains_key("redriven_from"))
        .unwrap();
    assert_eq!(
        (copy.partition, copy.offset),
        (sent.partition.unwrap(), sent.offset.unwrap())
    );
    assert_eq!(copy.key, order_id);
    assert_eq!(copy.value, original.value);
    assert_eq!(copy.headers["redrive_count"], "1");
    assert_eq!(
        copy.headers["event_id"], original.headers["event_id"],
        "the same event, with its own headers"
    );
    for dead_letter_header in tributary_consumer::DEAD_LETTER_HEADERS {
        assert!(
            !copy.headers.contains_key(dead_letter_header),
            "{dead_letter_header}: {:?}",
            copy.headers
        );
    }
    let recorded: (String, i32, i64, i32) = sqlx::query_as(
        "SELECT target_topic, target_partition, target_offset, redrive_count
         FROM consumer.redrives WHERE dlq_topic = $1 AND dlq_partition = $2 AND dlq_offset = $3",
    )
    .bind(&shipment.id.topic)
    .bind(shipment.id.partition)
    .bind(shipment.id.offset)
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        (shipments.clone(), copy.partition, copy.offset, 1)
    );

    // Again: nothing is sent.
    let (outcomes, summary) = redrive(&app, &shipments_only).await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].id, shipment.id);
    assert_eq!(outcomes[0].outcome, "skipped");
    assert_eq!(outcomes[0].reason.as_deref(), Some("already redriven"));
    assert_eq!(summary.redriven, 0);
    assert_eq!(summary.skipped.get("already redriven"), Some(&1));
    assert_eq!(redrives_recorded(&app).await, 1);
    assert_eq!(status(&app, &order_id).await, ("shipped".to_owned(), 3));
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_guard_stops_a_payment_that_keeps_failing() {
    let app = TestApp::spawn(&[Role::Api, Role::Relay, Role::ProcessManager]).await;
    let never = Uuid::now_v7().to_string();
    let payments = app.app.topic(Topic::Payments);
    ingest(
        &app,
        Topic::Payments,
        "payments.PaymentCaptured",
        &never,
        captured(&never, 500, "EUR"),
    )
    .await;
    let first = list_until(&app, &Filter::default(), 1).await.remove(0);

    let (outcomes, summary) = redrive(&app, &options(&app, 1)).await;
    assert_eq!(summary.redriven, 1, "{outcomes:?}");
    let sent = outcomes[0].clone();
    assert_eq!(
        (sent.id.clone(), sent.redrive_count),
        (first.id.clone(), Some(1))
    );

    // The copy fails again and is dead-lettered again, from where it landed.
    let both = list_until(&app, &Filter::default(), 2).await;
    let again = both.iter().find(|l| l.id != first.id).unwrap();
    assert_eq!(again.original_topic.as_deref(), Some(payments.as_str()));
    assert_eq!(
        (again.original_partition, again.original_offset),
        (sent.partition, sent.offset)
    );
    assert_eq!(
        again.error.as_deref(),
        Some(format!("order {never} does not exist").as_str())
    );
    // The process manager dead-letters through the outbox with headers of
    // its own, so the copy's redrive_count is not on this dead letter: the
    // loop guard finds it in consumer.redrives, by where the copy landed.
    let (outcomes, summary) = redrive(
        &app,
        &Redrive {
            dry_run: true,
            ..options(&app, 2)
        },
    )
    .await;
    let would = outcomes.iter().find(|o| o.id == again.id).unwrap();
    assert_eq!(
        (would.outcome, would.redrive_count),
        ("would_redrive", Some(2))
    );
    assert_eq!(summary.would_redrive, 1);

    let (outcomes, summary) = redrive(&app, &options(&app, 1)).await;
    let reasons: Vec<(DlqId, &str)> = outcomes
        .iter()
        .map(|o| (o.id.clone(), o.reason.as_deref().unwrap_or(o.outcome)))
        .collect();
    assert_eq!(
        reasons,
        [
            (first.id.clone(), "already redriven"),
            (again.id.clone(), "redriven 1 time")
        ],
        "one partition: offset order"
    );
    assert_eq!(summary.redriven, 0);
    assert_eq!(
        summary.skipped.into_iter().collect::<Vec<_>>(),
        [
            ("already redriven".to_owned(), 1),
            ("redriven 1 time".to_owned(), 1)
        ]
    );
    assert_eq!(redrives_recorded(&app).await, 1, "nothing more was sent");
    app.stop().await.unwrap();
}

/// Runs `tributary ctl dlq ARGS` against the test's services.
fn ctl(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    app.run_binary(&[&["ctl", "dlq"][..], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_pill_redriven_and_dead_lettered_again_keeps_its_redrive_count() {
    let app = TestApp::spawn(&[Role::ProcessManager]).await;
    let payments = app.app.topic(Topic::Payments);
    let producer = app.producer();
    producer
        .send(
            FutureRecord::to(&payments)
                .key("pill-1")
                .payload(&b"not avro at all"[..])
                .headers(OwnedHeaders::new().insert(Header {
                    key: "correlation_id",
                    value: Some("c-1"),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let first = list_until(&app, &Filter::default(), 1).await.remove(0);
    assert_eq!(first.schema_id, None);
    assert_eq!(first.key.as_deref(), Some("pill-1"));

    // Not Confluent-framed: shown as base64, with the reason.
    let shown = app
        .app
        .dead_letter_admin()
        .unwrap()
        .show(&first.id)
        .await
        .unwrap();
    assert_eq!(shown.value, None);
    assert_eq!(
        shown.value_base64.as_deref(),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(b"not avro at all")
                .as_str()
        )
    );
    assert!(
        shown
            .undecoded
            .as_deref()
            .unwrap()
            .contains("not a Confluent-framed Avro value"),
        "{shown:?}"
    );
    assert_eq!(
        shown.headers["consumer_group"].as_deref(),
        Some(group(&app).as_str())
    );

    // Through the binary: JSON lines, and a dry run that sends nothing.
    let (code, stdout, stderr) = ctl(&app, &["list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["id"], first.id.to_string());
    assert_eq!(lines[0]["original_topic"], payments.as_str());
    let group_name = group(&app);
    let (code, stdout, stderr) = ctl(
        &app,
        &["redrive", "--group", &group_name, "--dry-run", "--json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["outcome"], "would_redrive");
    assert_eq!(lines[1]["summary"]["would_redrive"], 1);
    assert_eq!(lines[1]["summary"]["redriven"], 0);
    let missing = DlqId {
        offset: 1_000,
        ..first.id.clone()
    };
    let (code, _, stderr) = ctl(&app, &["show", &missing.to_string()]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("there is no dead letter {missing}")),
        "{stderr}"
    );
    assert_eq!(redrives_recorded(&app).await, 0);

    let (outcomes, _) = redrive(&app, &options(&app, 1)).await;
    assert_eq!(outcomes[0].outcome, "redriven", "{outcomes:?}");
    // The runtime dead-letters the copy again, keeping the headers it does not own.
    let both = list_until(&app, &Filter::default(), 2).await;
    let again = both.iter().find(|l| l.id != first.id).unwrap();
    assert_eq!(again.redrive_count, 1);
    let shown = app
        .app
        .dead_letter_admin()
        .unwrap()
        .show(&again.id)
        .await
        .unwrap();
    assert_eq!(shown.headers["redrive_count"].as_deref(), Some("1"));
    assert_eq!(
        shown.headers["redriven_from"].as_deref(),
        Some(first.id.to_string().as_str())
    );
    assert_eq!(shown.headers["correlation_id"].as_deref(), Some("c-1"));
    assert_eq!(
        shown.headers["original_offset"].as_deref(),
        Some(outcomes[0].offset.unwrap().to_string().as_str())
    );

    // The readable forms, through the binary.
    let (code, table, stderr) = ctl(&app, &["list"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].starts_with("ID ") && rows[0].contains("REDRIVES"),
        "{table}"
    );
    let columns: Vec<&str> = rows[2].split_whitespace().collect();
    assert_eq!(
        columns[..5],
        [
            again.id.to_string().as_str(),
            group_name.as_str(),
            &format!(
                "{payments}:{}:{}",
                outcomes[0].partition.unwrap(),
                outcomes[0].offset.unwrap()
            ),
            &again
                .dead_lettered_at
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "1"
        ],
        "{table}"
    );
    assert_eq!(rows[3], "2 dead letters");
    let (code, text, stderr) = ctl(&app, &["show", &again.id.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.contains("\n  redrive_count: 1\n")
            && text.contains("\nkey         pill-1\n")
            && text.contains("\nvalue       not decoded: not a Confluent-framed Avro value")
            && text.contains("\n(base64) bm90IGF2cm8gYXQgYWxs\n"),
        "{text}"
    );

    let (outcomes, summary) = redrive(&app, &options(&app, 1)).await;
    assert_eq!(summary.redriven, 0);
    assert_eq!(
        outcomes
            .iter()
            .map(|o| o.reason.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["already redriven", "redriven 1 time"]
    );

    // An unknown group is refused before anything is read or sent.
    let error = app
        .app
        .dead_letter_admin()
        .unwrap()
        .redrive(
            &Redrive {
                group: "nope".into(),
                ..options(&app, 3)
            },
            |_| {},
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("there is no consumer group \"nope\""),
        "{error}"
    );
    let error = app
        .app
        .dead_letter_admin()
        .unwrap()
        .show(&DlqId {
            topic: payments.clone(),
            partition: 0,
            offset: 0,
        })
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is not a dead-letter topic of ours"),
        "{error}"
    );
    assert_eq!(redrives_recorded(&app).await, 1);
    app.stop().await.unwrap();
}

#[test]
fn bad_input_is_refused_in_one_line_before_anything_is_sent() {
    // Refused by the argument parser: exit code 2, the reason on the first line.
    for (args, reason) in [
        (&["show", "not-an-id"][..], "not three parts"),
        (&["show", "t.dlq:x:3"][..], "partition \"x\""),
        (&["list", "--since", "yesterday"][..], "--since"),
        (&["list", "--until", "2025-13-01T00:00:00Z"][..], "--until"),
        (&["redrive", "--group", "g", "--rate", "0"][..], "--rate"),
        (
            &["redrive", "--group", "g", "--max-redrives", "0"][..],
            "--max-redrives",
        ),
    ] {
        let (code, stdout, stderr) = tributary(&[], &[&["ctl", "dlq"][..], args].concat());
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value") && first.contains(reason),
            "{args:?}: {stderr}"
        );
    }
    // Refused by the command, before connecting: one line, exit code 1.
    for args in [
        &["list", "--group", "nope"][..],
        &["redrive", "--group", "nope"][..],
    ] {
        let (code, stdout, stderr) = tributary(&[], &[&["ctl", "dlq"][..], args].concat());
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert_eq!(
            stderr.trim(),
            "error: there is no consumer group \"nope\" (groups: tributary-projector, tributary-process-manager, tributary-notifier, tributary-tasks)"
        );
    }
}
