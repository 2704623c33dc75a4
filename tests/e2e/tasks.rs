//! The task system over a real broker and database: enqueue over HTTP and
//! the CLI, results, retries with bounded backoff through delay topics, the
//! dead letter after the last attempt and its redrive, time limits,
//! countdowns, a worker killed mid-task, and priorities under load.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary::{Role, Settings};
use tributary_tasks::{
    Enqueue, Priority, Task, TaskContext, TaskError,
    results::{self, TaskRow},
    schedule::{Missed, Schedule},
};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, problem, test_settings};

/// The test task's arguments.
#[derive(Debug, Clone, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "test.tasks")]
struct Work {
    /// Names the runs of one task in the journal.
    key: String,
    /// How long each attempt takes.
    sleep_ms: i64,
    /// How many attempts fail before one succeeds.
    failures: i32,
}

/// One attempt as the task saw it.
#[derive(Debug, Clone)]
struct Run {
    key: String,
    attempt: u32,
    priority: Priority,
    started: Instant,
    finished: Option<Instant>,
}

/// Every attempt of [`WorkTask`], shared with the test.
#[derive(Debug, Clone, Default)]
struct Journal(Arc<Mutex<Vec<Run>>>);

impl Journal {
    fn runs(&self, key: &str) -> Vec<Run> {
        let runs = self.0.lock().unwrap();
        runs.iter().filter(|r| r.key == key).cloned().collect()
    }

    fn all(&self) -> Vec<Run> {
        self.0.lock().unwrap().clone()
    }
}

/// Sleeps, then fails its first `failures` attempts (as a flaky service
/// would) and succeeds after, returning its key and attempt.
struct WorkTask(Journal);

impl Task for WorkTask {
    const NAME: &'static str = "test.work";
    type Args = Work;

    async fn run(&self, ctx: TaskContext, args: Work) -> Result<Value, TaskError> {
        let index = {
            let mut runs = self.0.0.lock().unwrap();
            let before = runs.iter().filter(|r| r.key == args.key).count();
            runs.push(Run {
                key: args.key.clone(),
                attempt: ctx.attempt,
                priority: ctx.priority,
                started: Instant::now(),
                finished: None,
            });
            (runs.len() - 1, before)
        };
        if args.failures < 0 {
            panic!("a task that panics");
        }
        tokio::time::sleep(Duration::from_millis(args.sleep_ms as u64)).await;
        self.0.0.lock().unwrap()[index.0].finished = Some(Instant::now());
        if (index.1 as i32) < args.failures {
            return Err(TaskError::Retry(anyhow::anyhow!(
                "flaky failure {} of {}",
                index.1 + 1,
                args.failures
            )));
        }
        Ok(json!({"key": args.key, "attempt": ctx.attempt}))
    }
}

async fn spawn(settings: Settings, roles: &[Role]) -> (TestApp, Journal) {
    let journal = Journal::default();
    let task = WorkTask(journal.clone());
    (
        TestApp::spawn_with_tasks(settings, roles, |tasks| tasks.with(task)).await,
        journal,
    )
}

fn work(key: &str, sleep_ms: i64, failures: i32) -> Work {
    Work {
        key: key.to_owned(),
        sleep_ms,
        failures,
    }
}

async fn enqueue_http(app: &TestApp, body: Value) -> Uuid {
    let response = app.post("/tasks", &body).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let accepted: Value = response.json().await.unwrap();
    accepted["task_id"].as_str().unwrap().parse().unwrap()
}

/// Waits until task `task_id` is in `state`.
async fn reaches(app: &TestApp, task_id: Uuid, state: &str, within: Duration) -> TaskRow {
    eventually(within, &format!("task {task_id} {state}"), || async {
        results::get(&app.app.pool, task_id)
            .await
            .unwrap()
            .filter(|row| row.state == state)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_enqueued_over_http_runs_and_its_result_is_queryable() {
    let (app, journal) = spawn(
        test_settings().await,
        &[Role::Api, Role::Relay, Role::Worker],
    )
    .await;
    let task_id = enqueue_http(
        &app,
        json!({"task": "test.work", "args": {"key": "http", "sleep_ms": 0, "failures": 0},
               "priority": "high"}),
    )
    .await;
    let row = reaches(&app, task_id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(row.result, Some(json!({"key": "http", "attempt": 1})));
    assert_eq!((row.attempts, row.priority.as_str()), (1, "high"));
    assert!(row.started_at.unwrap() >= row.enqueued_at);
    assert!(row.finished_at.unwrap() >= row.started_at.unwrap());
    assert_eq!(journal.runs("http").len(), 1);

    let shown: Value = app
        .get(&format!("/tasks/{task_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["state"], "succeeded");
    let listed: Value = app
        .get("/tasks?state=succeeded&task=test.work")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["tasks"][0]["task_id"], task_id.to_string());
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_task_requests_are_refused_naming_the_field() {
    let (app, _) = spawn(test_settings().await, &[Role::Api]).await;
    let cases = [
        (json!({"task": "test.nope"}), "task"),
        (
            json!({"task": "test.work", "args": {"key": "k", "sleep_ms": 1}}),
            "args.failures",
        ),
        (
            json!({"task": "test.work", "args": {"key": 3, "sleep_ms": 1, "failures": 0}}),
            "args.key",
        ),
        (
            json!({"task": "tributary.noop", "priority": "urgent"}),
            "priority",
        ),
        (
            json!({"task": "tributary.noop", "countdown": "5s", "eta": "2030-01-01T00:00:00Z"}),
            "eta",
        ),
        (
            json!({"task": "tributary.noop", "countdown": "soon"}),
            "countdown",
        ),
        (
            json!({"task": "tributary.noop", "max_attempts": 0}),
            "max_attempts",
        ),
        (
            json!({"task": "tributary.noop", "countdown": "400days"}),
            "countdown",
        ),
        (
            json!({"task": "tributary.noop", "eta": "9999-01-01T00:00:00Z"}),
            "eta",
        ),
    ];
    for (body, field) in cases {
        let refused = problem(app.post("/tasks", &body).await, 400).await;
        assert_eq!(refused["field"], field, "{body} → {refused}");
    }
    let missing = app.get(&format!("/tasks/{}", Uuid::now_v7())).await;
    assert_eq!(missing.status(), 404);
    let bad_state = app.get("/tasks?state=sleeping").await;
    assert_eq!(problem(bad_state, 400).await["field"], "state");
    // Nothing was written for the refused requests.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks.results")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_retries_with_backoff_within_bounds_through_the_delay_topics() {
    let mut settings = test_settings().await;
    settings.tasks.retry_backoff = Duration::from_millis(500);
    let (app, journal) = spawn(settings, &[Role::Worker]).await;
    let enqueuer = app.app.enqueuer().await.unwrap();
    let task_id = enqueuer
        .produce(&Enqueue::new::<WorkTask>(&work("flaky", 0, 2)).unwrap())
        .await
        .unwrap();
    let row = reaches(&app, task_id, "succeeded", Duration::from_secs(60)).await;
    assert_eq!(row.attempts, 3);
    let runs = journal.runs("flaky");
    assert_eq!(
        runs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Backoff before attempt n+1: 500 ms × 2^(n-1) with jitter (half to
    // all of it), plus the forwarder's and the fetch's latency.
    for (n, pair) in runs.windows(2).enumerate() {
        let ceiling = Duration::from_millis(500 * 2u64.pow(n as u32));
        let gap = pair[1].started - pair[0].finished.unwrap();
        assert!(
            gap >= ceiling / 2 && gap <= ceiling + Duration::from_millis(2500),
            "backoff before attempt {} was {gap:?}, expected {:?}..{:?} (+ latency)",
            n + 2,
            ceiling / 2,
            ceiling
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_last_attempt_a_task_is_dead_lettered_and_a_redrive_runs_it() {
    let mut settings = test_settings().await;
    settings.tasks.retry_backoff = Duration::from_millis(200);
    let (app, journal) = spawn(settings, &[Role::Worker]).await;
    let enqueuer = app.app.enqueuer().await.unwrap();
    let task_id = enqueuer
        .produce(
            &Enqueue::new::<WorkTask>(&work("doomed", 0, 2))
                .unwrap()
                .max_attempts(2),
        )
        .await
        .unwrap();
    let row = reaches(&app, task_id, "dead", Duration::from_secs(60)).await;
    assert_eq!(row.attempts, 2);
    assert!(
        row.error.as_deref().unwrap().contains("attempt 2 of 2"),
        "{row:?}"
    );
    let dlq = app.app.dead_letters_of(app.app.settings.tasks.group());
    let letters = app.read_topic_named(&dlq, 1).await;
    assert_eq!(letters[0].headers["task_id"], task_id.to_string());
    assert!(letters[0].headers["error"].contains("flaky failure 2 of 2"));

    // The flaky service is back: a redrive runs the task once more.
    app.redrive_tasks();
    let row = reaches(&app, task_id, "succeeded", Duration::from_secs(60)).await;
    assert_eq!(row.result, Some(json!({"key": "doomed", "attempt": 2})));
    assert_eq!(journal.runs("doomed").len(), 3);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_time_limit_fails_that_attempt() {
    let (app, journal) = spawn(test_settings().await, &[Role::Worker]).await;
    let enqueuer = app.app.enqueuer().await.unwrap();
    let task_id = enqueuer
        .produce(
            &Enqueue::new::<WorkTask>(&work("slow", 5_000, 0))
                .unwrap()
                .max_attempts(1)
                .time_limit(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let row = reaches(&app, task_id, "dead", Duration::from_secs(30)).await;
    assert!(
        row.error.as_deref().unwrap().contains("time limit"),
        "{row:?}"
    );
    let runs = journal.runs("slow");
    assert_eq!(runs.len(), 1);
    assert!(runs[0].finished.is_none(), "the attempt was stopped");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_fails_its_attempt_and_the_worker_carries_on() {
    let (app, journal) = spawn(test_settings().await, &[Role::Worker]).await;
    let enqueuer = app.app.enqueuer().await.unwrap();
    let panics = enqueuer
        .produce(
            &Enqueue::new::<WorkTask>(&work("panics", 0, -1))
                .unwrap()
                .max_attempts(1),
        )
        .await
        .unwrap();
    let row = reaches(&app, panics, "dead", Duration::from_secs(30)).await;
    assert!(
        row.error
            .as_deref()
            .unwrap()
            .contains("panicked: a task that panics"),
        "{row:?}"
    );
    let after = enqueuer
        .produce(&Enqueue::new::<WorkTask>(&work("after", 0, 0)).unwrap())
        .await
        .unwrap();
    reaches(&app, after, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(journal.runs("panics").len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_countdown_waits_in_a_delay_topic_until_it_is_due() {
    let (app, _) = spawn(
        test_settings().await,
        &[Role::Api, Role::Relay, Role::Worker],
    )
    .await;
    let task_id = enqueue_http(
        &app,
        json!({"task": "test.work", "args": {"key": "later", "sleep_ms": 0, "failures": 0},
               "countdown": "3s"}),
    )
    .await;
    let pending = results::get(&app.app.pool, task_id).await.unwrap().unwrap();
    assert_eq!(pending.state, "pending");
    let due = pending.due_at.expect("a countdown sets due_at");
    let row = reaches(&app, task_id, "succeeded", Duration::from_secs(30)).await;
    let started = row.started_at.unwrap();
    assert!(started >= due, "started {started} before it was due {due}");
    assert!(
        started - due < chrono::Duration::seconds(3),
        "started {started}, due {due}"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_leaves_it_to_the_next_worker() {
    let mut settings = test_settings().await;
    settings.tasks.retry_backoff = Duration::from_secs(3600);
    let (app, _) = spawn(settings, &[]).await;
    let enqueuer = app.app.enqueuer().await.unwrap();
    let task_id = enqueuer
        .produce(
            &Enqueue::new::<tributary_tasks::Sleep>(&tributary_tasks::definition::SleepArgs {
                ms: 4_000,
            })
            .unwrap(),
        )
        .await
        .unwrap();
    // A worker process, killed (SIGKILL) while the task runs.
    let env = app.binary_env();
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["run", "worker"])
        .env_remove("KAFKA_BROKERS")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("TRIBUTARY__KAFKA__SESSION_TIMEOUT", "6s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the worker starts");
    let running = reaches(&app, task_id, "running", Duration::from_secs(60)).await;
    first.kill().unwrap();
    first.wait().unwrap();

    // The next worker gets the task back once the group notices, and runs
    // it again: the same attempt, as nothing recorded a failure.
    let token = CancellationToken::new();
    let second = tokio::spawn(app.app.task_worker().await.unwrap().run(token.clone()));
    let row = reaches(&app, task_id, "succeeded", Duration::from_secs(60)).await;
    assert_eq!(row.result, Some(json!({"slept_ms": 4000})));
    assert_eq!(row.attempts, 1);
    assert!(
        row.started_at.unwrap() > running.started_at.unwrap(),
        "the task ran again: {row:?}"
    );
    token.cancel();
    second.await.unwrap().unwrap();
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_tasks_drain_first_under_load() {
    let mut settings = test_settings().await;
    settings.tasks.concurrency = 2;
    let (app, journal) = spawn(settings, &[Role::Worker]).await;
    let enqueuer = app.app.enqueuer().await.unwrap();
    let produce = |key: String, priority: Priority| {
        let enqueuer = enqueuer.clone();
        async move {
            enqueuer
                .produce(
                    &Enqueue::new::<WorkTask>(&work(&key, 20, 0))
                        .unwrap()
                        .priority(priority),
                )
                .await
                .unwrap()
        }
    };
    const LOW: usize = 300;
    futures::future::join_all((0..LOW).map(|i| produce(format!("low-{i}"), Priority::Low))).await;
    eventually(
        Duration::from_secs(60),
        "the worker busy with low tasks",
        || async { (journal.all().len() >= 20).then_some(()) },
    )
    .await;
    futures::future::join_all((0..20).map(|i| produce(format!("high-{i}"), Priority::High))).await;
    eventually(Duration::from_secs(60), "every high task done", || async {
        let runs = journal.all();
        let high = runs
            .iter()
            .filter(|r| r.priority == Priority::High && r.finished.is_some())
            .count();
        (high == 20).then_some(())
    })
    .await;
    let low_started = journal
        .all()
        .iter()
        .filter(|r| r.priority == Priority::Low)
        .count();
    assert!(
        low_started < LOW - 100,
        "{low_started} of {LOW} low tasks had started when the last high one finished"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_enqueues_shows_and_lists_tasks() {
    let (app, _) = spawn(test_settings().await, &[Role::Relay, Role::Worker]).await;
    let (code, stdout, stderr) = app.run_binary(&[
        "ctl",
        "task",
        "enqueue",
        "tributary.noop",
        "--priority",
        "low",
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let enqueued: Value = serde_json::from_str(stdout.trim()).unwrap();
    let task_id: Uuid = enqueued["task_id"].as_str().unwrap().parse().unwrap();
    reaches(&app, task_id, "succeeded", Duration::from_secs(30)).await;

    let (code, stdout, _) = app.run_binary(&["ctl", "task", "show", &task_id.to_string()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("state     succeeded"), "{stdout}");
    let (code, stdout, _) =
        app.run_binary(&["ctl", "task", "list", "--state", "succeeded", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(listed["task_id"], task_id.to_string());

    // Bad input: one line, a non-zero exit, nothing enqueued.
    for (args, says) in [
        (
            &["ctl", "task", "enqueue", "no.such.task"][..],
            "no task is named",
        ),
        (
            &[
                "ctl",
                "task",
                "enqueue",
                "tributary.noop",
                "--args",
                "{\"x\": 1}",
            ][..],
            "unknown field",
        ),
        (&["ctl", "task", "show", "not-a-uuid"][..], "invalid"),
    ] {
        let (code, stdout, stderr) = app.run_binary(args);
        assert_ne!(code, 0, "{args:?}: {stdout}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        // clap adds a hint line to its own refusals.
        assert!(
            stderr.lines().next().unwrap().contains(says),
            "{args:?}: {stderr}"
        );
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks.results")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    app.stop().await.unwrap();
}

fn schedule(name: &str, cron: &str, missed: Missed) -> Schedule {
    Schedule {
        name: name.to_owned(),
        task: "tributary.noop".to_owned(),
        cron: cron.to_owned(),
        args: Default::default(),
        priority: Priority::Default,
        missed,
    }
}

/// Ticks enqueued per schedule tick, from the outbox rows' correlation ids.
async fn enqueued_ticks(app: &TestApp, schedule: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT headers->>'correlation_id', count(*) FROM commands.outbox
         WHERE headers->>'correlation_id' LIKE 'schedule:' || $1 || ':%'
         GROUP BY 1 ORDER BY 1",
    )
    .bind(schedule)
    .fetch_all(&app.app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_fire_each_tick_once() {
    let mut settings = test_settings().await;
    settings.tasks.schedules = vec![schedule("every-second", "* * * * * *", Missed::Skip)];
    // A short lease, so it may change hands while the test runs.
    settings.tasks.scheduler_lease = Duration::from_millis(400);
    let (app, _) = spawn(settings, &[]).await;
    let token = CancellationToken::new();
    let schedulers: Vec<_> = futures::future::join_all((0..2).map(|_| app.app.scheduler()))
        .await
        .into_iter()
        .map(|s| tokio::spawn(s.unwrap().run(token.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    token.cancel();
    for scheduler in schedulers {
        scheduler.await.unwrap().unwrap();
    }
    let ticks = enqueued_ticks(&app, "every-second").await;
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert!(ticks.iter().all(|(_, n)| *n == 1), "{ticks:?}");

    // Two schedulers firing the same due tick at the same moment (as when
    // the lease changes hands): the schedule's row lock lets one through.
    let (a, b) = (
        app.app.scheduler().await.unwrap(),
        app.app.scheduler().await.unwrap(),
    );
    sqlx::query("UPDATE tasks.schedules SET next_fire_at = now() - interval '100 ms'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let (fired_a, fired_b) = tokio::join!(a.fire_due(now), b.fire_due(now));
    assert_eq!(fired_a.unwrap().len() + fired_b.unwrap().len(), 1);
    let ticks = enqueued_ticks(&app, "every-second").await;
    assert!(ticks.iter().all(|(_, n)| *n == 1), "{ticks:?}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_are_skipped_or_caught_up_once_and_next_ticks_are_visible() {
    let mut settings = test_settings().await;
    // Midnight, New Year's Day: every tick since 2020 was missed.
    settings.tasks.schedules = vec![
        schedule("yearly-skip", "0 0 0 1 1 *", Missed::Skip),
        schedule("yearly-catch-up", "0 0 0 1 1 *", Missed::CatchUpOnce),
    ];
    let (app, _) = spawn(settings, &[]).await;
    let scheduler = app.app.scheduler().await.unwrap();
    scheduler.register().await.unwrap();
    sqlx::query("UPDATE tasks.schedules SET next_fire_at = '2020-01-01T00:00:00Z'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let fired = scheduler.fire_due(now).await.unwrap();
    let year = chrono::Datelike::year(&now);
    let last_new_year = chrono::NaiveDate::from_ymd_opt(year, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(
        (fired[0].schedule.as_str(), fired[0].tick),
        ("yearly-catch-up", last_new_year)
    );
    assert!(scheduler.fire_due(now).await.unwrap().is_empty());
    let next_new_year = chrono::NaiveDate::from_ymd_opt(year + 1, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();

    let (code, stdout, stderr) = app.run_binary(&["ctl", "task", "schedules", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let next: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(row["next_fire_at"].clone()).unwrap();
        assert_eq!(next, next_new_year, "{row}");
    }
    let caught_up = rows
        .iter()
        .find(|r| r["name"] == "yearly-catch-up")
        .unwrap();
    assert_eq!(caught_up["last_task_id"], fired[0].task_id.to_string());
    let skipped = rows.iter().find(|r| r["name"] == "yearly-skip").unwrap();
    assert!(skipped["last_tick"].is_null(), "{skipped}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_schedule_stops_the_scheduler_naming_it() {
    for (bad, says) in [
        (schedule("s", "every day", Missed::Skip), "cron"),
        (
            Schedule {
                task: "no.such.task".into(),
                ..schedule("s", "0 6 * * *", Missed::Skip)
            },
            "no task is named",
        ),
    ] {
        let mut settings = test_settings().await;
        settings.tasks.schedules = vec![bad];
        let (app, _) = spawn(settings, &[]).await;
        let error = app.app.scheduler().await.unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("tasks.schedules \"s\"") && message.contains(says),
            "{message}"
        );
        app.stop().await.unwrap();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "test.tasks")]
struct Fan {
    key: String,
    subtasks: i32,
}

/// Starts a chord of `subtasks` [`WorkTask`]s (every third fails once)
/// with a [`CollectTask`] callback, then fails its own first attempt: the
/// retry must not start the chord again.
struct FanTask(Journal);

impl Task for FanTask {
    const NAME: &'static str = "test.fan";
    type Args = Fan;

    async fn run(&self, ctx: TaskContext, args: Fan) -> Result<Value, TaskError> {
        self.0.0.lock().unwrap().push(Run {
            key: args.key.clone(),
            attempt: ctx.attempt,
            priority: ctx.priority,
            started: Instant::now(),
            finished: None,
        });
        let subtasks = (0..args.subtasks)
            .map(|i| {
                let work = work(
                    &format!("{}-{i}", args.key),
                    (i as i64 * 7) % 40,
                    (i % 3 == 0) as i32,
                );
                Enqueue::new::<WorkTask>(&work).unwrap()
            })
            .collect();
        let callback = Enqueue::new::<CollectTask>(&Collect {
            key: args.key.clone(),
        })?;
        ctx.chord(subtasks, callback).await?;
        if ctx.attempt == 1 {
            return Err(TaskError::Retry(anyhow::anyhow!(
                "failing after starting the chord"
            )));
        }
        Ok(Value::Null)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "test.tasks")]
struct Collect {
    key: String,
}

/// A chord's callback: what it saw of the chord's members when it ran.
#[derive(Debug, Clone)]
struct Collected {
    key: String,
    members: usize,
    succeeded: usize,
    at: Instant,
}

struct CollectTask(Arc<Mutex<Vec<Collected>>>);

impl Task for CollectTask {
    const NAME: &'static str = "test.collect";
    type Args = Collect;

    async fn run(&self, ctx: TaskContext, args: Collect) -> Result<Value, TaskError> {
        let rows = ctx.chord_results().await?;
        let succeeded = rows.iter().filter(|r| r.state == "succeeded").count();
        self.0.lock().unwrap().push(Collected {
            key: args.key,
            members: rows.len(),
            succeeded,
            at: Instant::now(),
        });
        Ok(json!({"members": rows.len(), "succeeded": succeeded}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_callback_runs_once_after_every_subtask_finished() {
    let mut settings = test_settings().await;
    settings.tasks.retry_backoff = Duration::from_millis(200);
    let journal = Journal::default();
    let collected = Arc::new(Mutex::new(Vec::new()));
    let (work, fan, collect) = (
        WorkTask(journal.clone()),
        FanTask(journal.clone()),
        CollectTask(collected.clone()),
    );
    let app = TestApp::spawn_with_tasks(settings, &[Role::Relay, Role::Worker], |tasks| {
        tasks.with(work).with(fan).with(collect)
    })
    .await;
    let enqueuer = app.app.enqueuer().await.unwrap();
    const N: usize = 12;
    let parent = enqueuer
        .produce(
            &Enqueue::new::<FanTask>(&Fan {
                key: "fan".into(),
                subtasks: N as i32,
            })
            .unwrap(),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the chord's callback ran",
        || async { (!collected.lock().unwrap().is_empty()).then_some(()) },
    )
    .await;
    reaches(&app, parent, "succeeded", Duration::from_secs(30)).await;
    // Long enough for a second callback, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let collected = collected.lock().unwrap().clone();
    assert_eq!(collected.len(), 1, "the callback ran once: {collected:?}");
    let callback = &collected[0];
    assert_eq!(
        (callback.key.as_str(), callback.members, callback.succeeded),
        ("fan", N, N)
    );
    assert_eq!(journal.runs("fan").len(), 2, "the parent ran twice");
    let subtask_runs: Vec<Run> = journal
        .all()
        .into_iter()
        .filter(|r| r.key.starts_with("fan-"))
        .collect();
    let expected_runs = N + N.div_ceil(3); // every third subtask failed once
    assert_eq!(
        subtask_runs.len(),
        expected_runs,
        "one chord's subtasks, not two: {subtask_runs:?}"
    );
    let last_finished = subtask_runs
        .iter()
        .filter_map(|r| r.finished)
        .max()
        .unwrap();
    assert!(
        callback.at >= last_finished,
        "the callback ran before a subtask finished"
    );
    app.stop().await.unwrap();
}
