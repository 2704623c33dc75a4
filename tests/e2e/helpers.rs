//! Spawning the system under test, and polling for outcomes with deadlines.

use std::{
    collections::HashMap,
    future::Future,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    message::Headers,
    producer::{FutureProducer, FutureRecord},
};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary::{App, Listeners, Role, Settings};
use tributary_commands::{ProductCatalog, domain::Sku};
use tributary_platform::{db::scratch, shutdown::Shutdown};
use tributary_registry::ContractIds;
use tributary_schemas::{Event, Topic, framing};
use uuid::Uuid;

/// Settings for one test: a scratch database, a unique topic prefix and group.
pub(crate) async fn test_settings() -> Settings {
    if std::env::var_os("TEST_LOG").is_some() {
        tributary_platform::telemetry::init_logs(&Default::default());
    }
    tributary_platform::tls::install_crypto_provider();
    tributary_platform::telemetry::metrics();
    let mut settings = Settings {
        database: scratch::database().await.expect("a scratch database"),
        ..Settings::default()
    };
    let unique = Uuid::new_v4().simple().to_string();
    settings.kafka.brokers =
        Some(std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned()));
    settings.kafka.topic_prefix = format!("t{}.", &unique[..12]);
    settings.kafka.session_timeout = Duration::from_secs(6);
    settings.projector.group_id = Some(format!("projector-{unique}"));
    settings.process_manager.group_id = Some(format!("process-manager-{unique}"));
    settings.tasks.group_id = Some(format!("tasks-{unique}"));
    settings.notifier.consumer.group_id = Some(format!("notifier-{unique}"));
    // The tests' receivers listen on loopback.
    settings.notifier.webhooks.allow_private_targets = true;
    settings.relay.retry_interval = Duration::from_millis(100);
    tributary::app::own_token(&mut settings);
    settings
}

/// The system under test, with the roles asked for running.
pub(crate) struct TestApp {
    pub(crate) app: App,
    pub(crate) api: String,
    pub(crate) query: String,
    pub(crate) http: reqwest::Client,
    token: CancellationToken,
    roles: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Spawns `roles` (the registry always runs) over `settings`.
    pub(crate) async fn spawn_with(settings: Settings, roles: &[Role]) -> Self {
        Self::spawn_with_tasks(settings, roles, |tasks| tasks).await
    }

    /// Spawns `roles` over `settings`; `tasks` adds to the tasks the process knows.
    pub(crate) async fn spawn_with_tasks(
        mut settings: Settings,
        roles: &[Role],
        tasks: impl FnOnce(tributary_tasks::Catalog) -> tributary_tasks::Catalog,
    ) -> Self {
        let mut listeners = Listeners::ephemeral(&mut settings)
            .await
            .expect("listeners");
        let mut app = App::connect(settings, false)
            .await
            .expect("connecting the app");
        app.tasks = tasks(app.tasks.clone());
        app.ensure_topics().await.expect("topics");
        seed_catalog(&app).await;
        let mut shutdown = Shutdown::new();
        let token = shutdown.token();
        let registry = Listeners {
            registry: listeners.registry.take(),
            ..Listeners::default()
        };
        app.spawn(Role::Registry, registry, &mut shutdown)
            .await
            .expect("registry");
        for role in roles {
            let listeners = match role {
                Role::Api => Listeners {
                    api: listeners.api.take(),
                    ..Listeners::default()
                },
                Role::Query => Listeners {
                    query: listeners.query.take(),
                    ..Listeners::default()
                },
                _ => Listeners::default(),
            };
            app.spawn(*role, listeners, &mut shutdown)
                .await
                .expect("spawning a role");
        }
        let roles = tokio::spawn(shutdown.run(Duration::from_secs(10)));
        let bearer = app
            .settings
            .auth
            .tokens
            .get("self")
            .map(|t| t.secret.expose().to_owned());
        let http = match bearer {
            Some(bearer) => tributary::app::http_client(&bearer, Duration::from_secs(30)).unwrap(),
            None => reqwest::Client::new(),
        };
        Self {
            api: format!("http://{}", app.settings.api.listen),
            query: format!("http://{}", app.settings.query.listen),
            http,
            app,
            token,
            roles: Some(roles),
        }
    }

    /// Spawns `roles` with fresh test settings.
    pub(crate) async fn spawn(roles: &[Role]) -> Self {
        Self::spawn_with(test_settings().await, roles).await
    }

    /// The environment that points the built binary at this test's
    /// database, broker, topics, registry and consumer groups.
    pub(crate) fn binary_env(&self) -> Vec<(&'static str, String)> {
        let settings = &self.app.settings;
        let mut env = vec![
            ("DATABASE_URL", settings.database.url.expose().to_owned()),
            ("KAFKA_BROKERS", self.app.cluster.bootstrap_servers()),
            (
                "TRIBUTARY__KAFKA__TOPIC_PREFIX",
                settings.kafka.topic_prefix.clone(),
            ),
            ("TRIBUTARY__REGISTRY__URL", settings.registry.url.clone()),
            (
                "TRIBUTARY__TASKS__GROUP_ID",
                settings.tasks.group().to_owned(),
            ),
        ];
        if let Some(token) = &settings.registry.token {
            env.push(("TRIBUTARY__REGISTRY__TOKEN", token.expose().to_owned()));
        }
        if let Some(group) = &settings.projector.group_id {
            env.push(("TRIBUTARY__PROJECTOR__GROUP_ID", group.clone()));
        }
        if let Some(group) = &settings.process_manager.group_id {
            env.push(("TRIBUTARY__PROCESS_MANAGER__GROUP_ID", group.clone()));
        }
        if let Some(group) = &settings.notifier.consumer.group_id {
            env.push(("TRIBUTARY__NOTIFIER__CONSUMER__GROUP_ID", group.clone()));
        }
        env.push((
            "TRIBUTARY__NOTIFIER__WEBHOOKS__ALLOW_PRIVATE_TARGETS",
            settings.notifier.webhooks.allow_private_targets.to_string(),
        ));
        env
    }

    /// Runs the built binary with `args` against this test's services.
    pub(crate) fn run_binary(&self, args: &[&str]) -> (i32, String, String) {
        let env = self.binary_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tributary(&env, args)
    }

    /// Redrives the task worker's dead letters with the CLI; asserts it succeeded.
    pub(crate) fn redrive_tasks(&self) {
        let group = self.app.settings.tasks.group();
        let (code, stdout, stderr) =
            self.run_binary(&["ctl", "dlq", "redrive", "--group", group, "--json"]);
        assert_eq!(code, 0, "{stdout}{stderr}");
    }

    /// Stops every role and returns how they ended.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.token.cancel();
        self.roles.take().expect("running").await?
    }

    /// The contract's schema ids (registering them if needed).
    pub(crate) async fn ids(&self) -> ContractIds {
        self.app.contract_ids().await.expect("contract ids")
    }

    /// GETs `path` from the command API.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .expect("the API answers")
    }

    /// POSTs JSON to the command API.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.api))
            .json(body)
            .send()
            .await
            .expect("the API answers")
    }

    /// Registers a customer through the API and returns their id.
    pub(crate) async fn register_customer(&self, email: &str, name: &str) -> Uuid {
        let response = self
            .post(
                "/customers",
                &serde_json::json!({"email": email, "name": name}),
            )
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["customer_id"].as_str().unwrap().parse().unwrap()
    }

    /// The results of the tasks named `name`, newest first.
    pub(crate) async fn task_rows(&self, name: &str) -> Vec<tributary_tasks::results::TaskRow> {
        tributary_tasks::results::list(
            &self.app.pool,
            &tributary_tasks::results::Filter {
                name: Some(name.to_owned()),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    /// Places an order through the API and returns its id.
    pub(crate) async fn place_order(&self, body: &Value) -> Uuid {
        let response = self.post("/orders", body).await;
        assert_eq!(
            response.status(),
            201,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let accepted: Value = response.json().await.unwrap();
        Uuid::parse_str(accepted["order_id"].as_str().unwrap()).unwrap()
    }

    /// Rows in a table (a test's own database, so a plain count is exact).
    pub(crate) async fn count(&self, table: &'static str) -> i64 {
        let sql = match table {
            "commands.orders" => "SELECT count(*) FROM commands.orders",
            "commands.outbox" => "SELECT count(*) FROM commands.outbox",
            "read_model.orders" => "SELECT count(*) FROM read_model.orders",
            other => panic!("no count for {other}"),
        };
        sqlx::query_scalar(sql)
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }

    /// Sum of the stored next offsets of the orders projection over the order topic.
    pub(crate) async fn stored_offsets(&self) -> i64 {
        tributary_consumer::applied(
            &self.app.pool,
            tributary_projector::ORDERS_PROJECTION,
            &self.app.topic(Topic::Orders),
        )
        .await
        .unwrap()
    }

    /// A producer to the test's broker.
    pub(crate) fn producer(&self) -> FutureProducer {
        self.app
            .settings
            .kafka
            .producer_config(&self.app.cluster.bootstrap_servers(), "test-producer")
            .create()
            .unwrap()
    }

    /// Produces an event framed with its registered schema id.
    pub(crate) async fn produce<E: Event>(
        &self,
        producer: &FutureProducer,
        ids: &ContractIds,
        event: &E,
    ) {
        let value = framing::encode(ids.id_of(E::FULL_NAME).unwrap(), event).unwrap();
        self.produce_raw(producer, event.key(), &value).await;
    }

    /// Produces raw bytes to the order topic.
    pub(crate) async fn produce_raw(&self, producer: &FutureProducer, key: &str, value: &[u8]) {
        let topic = self.app.topic(Topic::Orders);
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload(value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }

    /// Reads the order topic from the beginning of every partition until
    /// records with `expected` distinct event ids arrived (panics after 60 s).
    pub(crate) async fn read_orders_topic(&self, expected: usize) -> Vec<Record> {
        self.read_topic(Topic::Orders, expected).await
    }

    /// Records on a contract topic: the sum of its partitions' high watermarks.
    pub(crate) fn topic_size(&self, topic: Topic) -> i64 {
        self.topic_size_named(&self.app.topic(topic))
    }

    /// Records on a topic by its deployed name.
    pub(crate) fn topic_size_named(&self, topic: &str) -> i64 {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.app.cluster.bootstrap_servers())
            .create()
            .unwrap();
        (0..self.app.settings.kafka.partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1
            })
            .sum()
    }

    /// Reads a contract topic like [`Self::read_orders_topic`].
    pub(crate) async fn read_topic(&self, topic: Topic, expected: usize) -> Vec<Record> {
        self.read_topic_named(&self.app.topic(topic), expected)
            .await
    }

    /// Reads a topic by its deployed name like [`Self::read_orders_topic`].
    pub(crate) async fn read_topic_named(&self, topic: &str, expected: usize) -> Vec<Record> {
        let topic = topic.to_owned();
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.app.cluster.bootstrap_servers())
            .set("group.id", format!("reader-{}", Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..self.app.settings.kafka.partitions {
            assignment
                .add_partition_offset(&topic, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let mut records: Vec<Record> = Vec::new();
        let mut distinct = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while distinct.len() < expected {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Ok(message) = tokio::time::timeout(remaining, consumer.recv()).await else {
                panic!(
                    "read {} of {expected} records from {topic} in 60 s",
                    records.len()
                );
            };
            let message = message.unwrap();
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let headers: HashMap<String, String> = headers;
            // A relay's repeat is the same record; a redriven copy is another.
            distinct.insert((
                headers
                    .get("event_id")
                    .cloned()
                    .unwrap_or_else(|| message.offset().to_string()),
                headers.get("redriven_from").cloned(),
            ));
            records.push(Record {
                partition: message.partition(),
                offset: message.offset(),
                key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                value: message.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
        records
    }
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) headers: HashMap<String, String>,
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A valid PlaceOrder body.
pub(crate) fn order_body(customer: Uuid, lines: &[(&str, i64, i64)]) -> Value {
    serde_json::json!({
        "customer_id": customer.to_string(),
        "currency": "EUR",
        "lines": lines.iter().map(|(sku, quantity, price)| serde_json::json!({
            "sku": sku, "quantity": quantity, "unit_price_minor": price
        })).collect::<Vec<_>>(),
    })
}

/// The SKUs the tests order: TEA-1, MUG, MUG-1, MUG-2 and SKU-0 to SKU-99.
async fn seed_catalog(app: &App) {
    let mut skus: Vec<String> = ["TEA-1", "MUG", "MUG-1", "MUG-2"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    skus.extend((0..100).map(|n| format!("SKU-{n}")));
    let products: Vec<_> = skus
        .iter()
        .map(|sku| (Sku::parse(sku).unwrap(), sku.as_str()))
        .collect();
    ProductCatalog::new(app.pool.clone())
        .add_missing(&products)
        .await
        .expect("the test catalog");
}

/// Asserts `response` is a problem document with `status` and a detail; returns it.
pub(crate) async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status);
    assert!(
        problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{problem}"
    );
    problem
}

/// POSTs an upstream event to the ingest endpoint as Avro JSON; asserts it was accepted.
pub(crate) async fn ingest(app: &TestApp, topic: Topic, record: &str, key: &str, value: Value) {
    let subject = format!("{}-{record}", app.app.topic(topic));
    let response = app
        .http
        .post(format!("{}/ingest/{}", app.api, topic.name()))
        .json(&serde_json::json!({"subject": subject, "key": key, "value": value}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        202,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

/// Runs the built binary with `env` on top of the test process's (without
/// `KAFKA_BROKERS`): exit code, stdout, stderr.
pub(crate) fn tributary(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .env_remove("KAFKA_BROKERS")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A `PaymentCaptured` as Avro JSON, for the ingest endpoint.
pub(crate) fn captured(order_id: &str, amount: i64, currency: &str) -> Value {
    serde_json::json!({"payment_id": "pay-1", "order_id": order_id, "amount_minor": amount, "currency": currency,
           "captured_at": 1_732_406_400_000_i64})
}

/// An order's status and version in the write model.
pub(crate) async fn status(app: &TestApp, order_id: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, version FROM commands.orders WHERE order_id = $1::uuid")
        .bind(order_id)
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
}

/// A local SMTP server (aiosmtpd, from the test environment's Python) that
/// keeps every message it receives in a maildir.
pub(crate) struct SmtpSink {
    pub(crate) url: String,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl SmtpSink {
    /// Starts one on a free port of 127.0.0.1 and points `settings`' e-mails at it.
    pub(crate) async fn start(settings: &mut Settings) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("tributary-smtp-{}", Uuid::new_v4().simple()));
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd (tests/services.sh installs it)");
        let sink = Self {
            url: format!("smtp://127.0.0.1:{port}"),
            dir,
            child,
        };
        eventually(
            Duration::from_secs(20),
            "the SMTP sink to listen",
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        settings.notifier.email.smtp_url = Some(tributary_platform::Secret::new(&sink.url));
        sink
    }

    /// Every message received so far, raw.
    pub(crate) fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("new")) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .collect()
    }

    /// Waits until `count` messages matching `filter` arrived, and returns them.
    pub(crate) async fn wait_for(
        &self,
        count: usize,
        what: &str,
        filter: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        eventually(Duration::from_secs(60), what, || async {
            let found: Vec<String> = self.messages().into_iter().filter(|m| filter(m)).collect();
            (found.len() >= count).then_some(found)
        })
        .await
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
