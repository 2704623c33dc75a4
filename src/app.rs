//! Assembles roles from settings: what `run`, `demo`, `bench` and the
//! end-to-end tests share. Each role is built here and run under one
//! [`Shutdown`]; `run all` spawns every role in one process.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{PgPool, migrate::Migrator};
use tokio::net::TcpListener;
use tributary_api::AppState;
use tributary_commands::{Customers, Orders, ProductCatalog};
use tributary_consumer::{
    AvroDecoder, Consumer, Wiring,
    dead_letter::{DeadLetterAdmin, Group},
};
use tributary_notifier::{
    Notifier, NotifierSettings,
    email::{Mailer, SendEmail},
    webhook::DeliverWebhook,
};
use tributary_platform::{auth::AuthSettings, http::serve_on, kafka::Cluster, shutdown::Shutdown};
use tributary_process_manager::ProcessManager;
use tributary_projector::{Decoder, OrdersProjection, Projector};
use tributary_registry::{ContractIds, RegistryClient};
use tributary_relay::Relay;
use tributary_schemas::Topic;
use tributary_tasks::{Enqueuer, Priority};
use tributary_worker::{Worker, WorkerWiring};
use uuid::Uuid;

use crate::Settings;

/// Every crate's migrations, applied as one ordered set.
pub const MIGRATORS: [&Migrator; 9] = [
    &tributary_consumer::MIGRATOR,
    &tributary_registry::MIGRATOR,
    &tributary_commands::MIGRATOR,
    &tributary_outbox::MIGRATOR,
    &tributary_projector::MIGRATOR,
    &tributary_tasks::MIGRATOR,
    &tributary_scheduler::MIGRATOR,
    &tributary_notifier::MIGRATOR,
    &tributary_shop_tasks::MIGRATOR,
];

/// The consumer groups we run, named from settings the way [`App`] names them,
/// with the topics their dead letters may go back to.
pub fn dead_letter_groups(settings: &Settings) -> Vec<Group> {
    vec![
        Group {
            name: settings
                .projector
                .group_or(tributary_projector::GROUP)
                .to_owned(),
            inputs: vec![Topic::Orders.name().to_owned()],
        },
        Group {
            name: settings
                .process_manager
                .group_or(tributary_process_manager::GROUP)
                .to_owned(),
            inputs: vec![
                Topic::Payments.name().to_owned(),
                Topic::Shipments.name().to_owned(),
            ],
        },
        Group {
            name: settings
                .notifier
                .consumer
                .group_or(tributary_notifier::GROUP)
                .to_owned(),
            inputs: vec![
                Topic::Orders.name().to_owned(),
                Topic::Customers.name().to_owned(),
            ],
        },
        Group {
            name: settings.tasks.group().to_owned(),
            // Tasks go back to their queues; a delayed one to its delay topic.
            inputs: tributary_tasks::Priority::ALL
                .map(|p| p.topic())
                .into_iter()
                .chain(
                    tributary_tasks::wire::DELAYS
                        .map(|d| tributary_tasks::wire::delay_topic(settings.tasks.group(), d)),
                )
                .collect(),
        },
    ]
}

/// How long a role waits for the registry at start-up.
const REGISTRY_WAIT: Duration = Duration::from_secs(60);

/// What the roles of one process share.
#[derive(Debug, Clone)]
pub struct App {
    /// The effective settings.
    pub settings: Settings,
    /// The PostgreSQL pool (migrated).
    pub pool: PgPool,
    /// The Kafka cluster (external, or the in-process mock).
    pub cluster: Arc<Cluster>,
    /// The tasks this process can run and enqueue.
    pub tasks: tributary_tasks::Catalog,
    /// The contract's schema ids, registered once per process.
    contract: Arc<tokio::sync::OnceCell<ContractIds>>,
    /// The task enqueuer (argument schemas registered), built once per process.
    enqueuer: Arc<tokio::sync::OnceCell<Enqueuer>>,
}

/// Every task this binary runs: the built-ins, the notifier's deliveries and the shop's tasks.
fn task_catalog(
    pool: &PgPool,
    notifier: &NotifierSettings,
) -> anyhow::Result<tributary_tasks::Catalog> {
    let email = SendEmail::new(pool.clone(), Mailer::new(&notifier.email)?);
    let catalog = tributary_tasks::Catalog::new()
        .with(DeliverWebhook::new(
            pool.clone(),
            notifier.webhooks.clone(),
        )?)
        .with(email.clone());
    Ok(tributary_shop_tasks::with_tasks(
        catalog,
        pool,
        &email,
        &notifier.email.reports_to,
    ))
}

/// Gives `settings` one fresh token with every scope, for a process that is
/// its own client (`demo`, `bench`), makes it the token the roles send to the
/// registry (`registry.token`), and returns its secret.
pub fn own_token(settings: &mut Settings) -> String {
    use tributary_platform::{
        Secret,
        auth::{Scope, TokenSettings},
    };
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    settings.auth.tokens.insert(
        "self".to_owned(),
        TokenSettings {
            secret: Secret::new(&secret),
            scopes: [Scope::Commands, Scope::Ingest, Scope::Query, Scope::Admin]
                .into_iter()
                .collect(),
        },
    );
    settings.registry.token = Some(Secret::new(&secret));
    secret
}

/// A client sending `token` as its bearer token.
pub fn http_client(token: &str, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .build()?)
}

/// The roles `run` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The command API (HTTP).
    Api,
    /// The outbox relay.
    Relay,
    /// The projector.
    Projector,
    /// The process manager: upstream payments and shipments become order transitions.
    ProcessManager,
    /// The query API (HTTP).
    Query,
    /// The notifier: webhooks and e-mails for the shop's events (delivered by the worker).
    Notifier,
    /// The task worker: runs tasks, forwards delayed ones.
    Worker,
    /// The scheduler: enqueues periodic tasks (one fires per tick, however many run).
    Scheduler,
    /// The schema registry (HTTP).
    Registry,
    /// Every role in one process.
    All,
}

impl App {
    /// Connects PostgreSQL (migrating) and Kafka. `allow_mock` lets an unset
    /// `kafka.brokers` start librdkafka's mock cluster in this process.
    pub async fn connect(settings: Settings, allow_mock: bool) -> anyhow::Result<Self> {
        let pool = tributary_platform::db::connect(&settings.database, &MIGRATORS).await?;
        let cluster = Arc::new(Cluster::connect(&settings.kafka, allow_mock)?);
        let tasks = task_catalog(&pool, &settings.notifier)?;
        Ok(Self {
            settings,
            pool,
            cluster,
            tasks,
            contract: Arc::default(),
            enqueuer: Arc::default(),
        })
    }

    /// Creates the contract's topics where they do not exist.
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        let mut names: Vec<String> = Topic::ALL.iter().map(|t| self.topic(*t)).collect();
        names.push(self.process_manager_dead_letters());
        names.push(self.projector_dead_letters());
        names.extend(Priority::ALL.map(|p| self.settings.kafka.topic(&p.topic())));
        names.extend(
            tributary_tasks::wire::DELAYS.map(|d| self.settings.kafka.topic(&self.delay_topic(d))),
        );
        names.push(self.dead_letters_of(self.settings.tasks.group()));
        names.push(self.notifier_dead_letters());
        self.cluster
            .ensure_topics(&self.settings.kafka, &names)
            .await
    }

    /// The deployed name of a contract topic.
    pub fn topic(&self, topic: Topic) -> String {
        self.settings.kafka.topic(topic.name())
    }

    /// A client of the configured registry, sending `registry.token`.
    pub fn registry_client(&self) -> anyhow::Result<RegistryClient> {
        Ok(self.settings.registry.client()?)
    }

    /// Registers the contract (waiting for the registry) the first time it
    /// is asked, and returns its ids; every role of the process shares them.
    /// Registering needs a `registry.token` with the `admin` scope.
    pub async fn contract_ids(&self) -> anyhow::Result<ContractIds> {
        let ids = self
            .contract
            .get_or_try_init(|| async {
                let registered = self
                    .registry_client()?
                    .register_contract(&self.settings.kafka.topic_prefix, REGISTRY_WAIT)
                    .await;
                registered.map_err(|error| {
                    let hint = match error.status() {
                        Some(401) => {
                            " (set registry.token, TRIBUTARY__REGISTRY__TOKEN, to a secret from the registry's auth.tokens)"
                        }
                        Some(403) => " (registry.token needs the admin scope)",
                        _ => "",
                    };
                    anyhow::Error::new(error).context(format!("registering the Avro contract{hint}"))
                })
            })
            .await?;
        Ok(ids.clone())
    }

    /// The command API's router, with the ingest endpoint for upstream events.
    pub async fn command_router(&self) -> anyhow::Result<axum::Router> {
        let ids = self.contract_ids().await?;
        let prefix = &self.settings.kafka.topic_prefix;
        let state = AppState {
            orders: Orders::new(self.pool.clone(), &ids, prefix)?,
            customers: Customers::new(self.pool.clone(), &ids, prefix)?,
            catalog: ProductCatalog::new(self.pool.clone()),
        };
        let auth = self.auth()?;
        let producer = self
            .settings
            .kafka
            .producer_config(&self.cluster.bootstrap_servers(), "tributary-ingest")
            .create()
            .context("creating the ingest endpoint's Kafka producer")?;
        let ingest = tributary_ingest::Ingest::new(self.registry_client()?, producer, prefix);
        let tasks =
            tributary_tasks::api::router(self.pool.clone(), self.enqueuer().await?, auth.clone());
        let subscriptions = tributary_notifier::api::router(
            self.pool.clone(),
            self.settings.notifier.webhooks.allow_private_targets,
            auth.clone(),
        );
        Ok(
            tributary_api::router(state, &self.settings.api, auth.clone())
                .merge(tributary_ingest::router(ingest, auth))
                .merge(tasks)
                .merge(subscriptions),
        )
    }

    /// The HTTP roles' tokens, refused at start-up when unsafe.
    fn auth(&self) -> anyhow::Result<Arc<AuthSettings>> {
        self.settings.auth.validate()?;
        Ok(Arc::new(self.settings.auth.clone()))
    }

    /// An outbox relay.
    pub fn relay(&self) -> anyhow::Result<Relay> {
        let config = self
            .settings
            .kafka
            .producer_config(&self.cluster.bootstrap_servers(), "tributary-relay");
        Relay::new(self.pool.clone(), &config, self.settings.relay.clone())
    }

    /// The decoder of the order events.
    pub async fn order_decoder(&self) -> anyhow::Result<Decoder> {
        let ids = self.contract_ids().await?;
        Ok(Decoder::new(AvroDecoder::new(self.registry_client()?, ids)))
    }

    /// A projector in the configured consumer group.
    pub async fn projector(&self) -> anyhow::Result<Projector> {
        let projection = OrdersProjection::new(self.order_decoder().await?);
        let group = self.settings.projector.group_or(tributary_projector::GROUP);
        let wiring = self.wiring(group, vec![self.topic(Topic::Orders)]);
        Projector::new(
            self.pool.clone(),
            projection,
            &wiring,
            self.settings.projector.clone(),
        )
    }

    /// What a projection rebuild needs from this deployment.
    pub async fn rebuild_deployment(
        &self,
    ) -> anyhow::Result<tributary_projector::rebuild::Deployment> {
        Ok(tributary_projector::rebuild::Deployment {
            pool: self.pool.clone(),
            decoder: self.order_decoder().await?,
            kafka: self.settings.kafka.clone(),
            bootstrap_servers: self.cluster.bootstrap_servers(),
            live_group: self
                .settings
                .projector
                .group_or(tributary_projector::GROUP)
                .to_owned(),
            settings: self.settings.projector.clone(),
        })
    }

    /// The delay topic of `delay` (before the deployment prefix).
    fn delay_topic(&self, delay: Duration) -> String {
        tributary_tasks::wire::delay_topic(self.settings.tasks.group(), delay)
    }

    /// The task enqueuer: registers every task's argument schema the first
    /// time it is asked (needs a `registry.token` with the admin scope).
    pub async fn enqueuer(&self) -> anyhow::Result<Enqueuer> {
        let enqueuer = self
            .enqueuer
            .get_or_try_init(|| async {
                let bootstrap = self.cluster.bootstrap_servers();
                Enqueuer::register(
                    self.tasks.clone(),
                    &self.registry_client()?,
                    &self.settings.kafka.topic_prefix,
                    self.settings.tasks.clone(),
                    &self
                        .settings
                        .kafka
                        .producer_config(&bootstrap, self.settings.tasks.group()),
                )
                .await
            })
            .await?;
        Ok(enqueuer.clone())
    }

    /// A task worker over every queue and delay topic.
    pub async fn task_worker(&self) -> anyhow::Result<Worker> {
        let bootstrap = self.cluster.bootstrap_servers();
        let group = self.settings.tasks.group();
        // librdkafka prefetches up to 64 MiB or 100,000 messages per
        // consumer by default; a worker has eight consumers. Its byte limit
        // counts payloads only, and a task's payload is its arguments, a
        // few bytes (the rest is headers): the message count is what bounds
        // a task consumer's prefetch.
        let consumer = |name: &str, prefetch_kib: &str, prefetch_messages: &str| {
            let mut config = self.settings.kafka.consumer_config(&bootstrap, name);
            config
                .set("queued.max.messages.kbytes", prefetch_kib)
                .set("queued.min.messages", prefetch_messages)
                // A full prefetch waits this long before fetching again
                // (1 s by default: a worker would idle at every refill).
                .set("fetch.queue.backoff.ms", "10")
                .set("fetch.max.bytes", "1048576")
                .set("max.partition.fetch.bytes", "262144");
            config
        };
        let wiring = WorkerWiring {
            queues: Priority::ALL
                .map(|p| {
                    (
                        p,
                        self.settings.kafka.topic(&p.topic()),
                        consumer(&format!("{group}.{p}"), "2048", "2048"),
                    )
                })
                .into(),
            delays: tributary_tasks::wire::DELAYS
                .map(|d| {
                    let topic = self.delay_topic(d);
                    (
                        d,
                        self.settings.kafka.topic(&topic),
                        consumer(
                            &format!("{group}.delay.{}", tributary_tasks::wire::delay_name(d)),
                            "256",
                            "256",
                        ),
                    )
                })
                .into(),
            dead_letters: tributary_consumer::DeadLetters::new(
                &self
                    .settings
                    .kafka
                    .producer_config(&bootstrap, &format!("{group}.dlq")),
                self.dead_letters_of(group),
                group.to_owned(),
            )?,
        };
        Worker::new(
            self.pool.clone(),
            self.enqueuer().await?,
            self.registry_client()?,
            wiring,
            self.settings.tasks.clone(),
        )
    }

    /// A scheduler of the configured periodic tasks.
    pub async fn scheduler(&self) -> anyhow::Result<tributary_scheduler::Scheduler> {
        let tasks = &self.settings.tasks;
        let holder = format!("{}-{}", std::process::id(), Uuid::new_v4().simple());
        tributary_scheduler::Scheduler::new(
            self.pool.clone(),
            self.enqueuer().await?,
            &tasks.schedules,
            holder,
            tasks.scheduler_lease,
            tasks.schedule_grace,
        )
    }

    /// A consumer group's topics, clients and dead-letter topic.
    pub fn wiring(&self, group: &str, topics: Vec<String>) -> Wiring {
        let bootstrap = self.cluster.bootstrap_servers();
        Wiring {
            topics,
            consumer: self.settings.kafka.consumer_config(&bootstrap, group),
            producer: self
                .settings
                .kafka
                .producer_config(&bootstrap, &format!("{group}.dlq")),
            dead_letter_topic: Some(self.dead_letters_of(group)),
        }
    }

    /// The dead-letter topic of consumer group `group` (`<group>.dlq`).
    pub fn dead_letters_of(&self, group: &str) -> String {
        self.settings.kafka.topic(&format!("{group}.dlq"))
    }

    /// The operators' dead-letter tools over this deployment's consumer groups.
    pub fn dead_letter_admin(&self) -> anyhow::Result<DeadLetterAdmin> {
        Ok(DeadLetterAdmin::new(
            dead_letter_groups(&self.settings),
            self.settings.kafka.clone(),
            self.cluster.bootstrap_servers(),
            self.pool.clone(),
            self.registry_client()?,
        ))
    }

    /// The projector's dead-letter topic.
    pub fn projector_dead_letters(&self) -> String {
        self.dead_letters_of(self.settings.projector.group_or(tributary_projector::GROUP))
    }

    /// The process manager's dead-letter topic.
    pub fn process_manager_dead_letters(&self) -> String {
        self.dead_letters_of(
            self.settings
                .process_manager
                .group_or(tributary_process_manager::GROUP),
        )
    }

    /// The notifier's dead-letter topic.
    pub fn notifier_dead_letters(&self) -> String {
        self.dead_letters_of(
            self.settings
                .notifier
                .consumer
                .group_or(tributary_notifier::GROUP),
        )
    }

    /// The notifier in its configured consumer group.
    pub async fn notifier(&self) -> anyhow::Result<Consumer<Notifier>> {
        let ids = self.contract_ids().await?;
        let settings = &self.settings.notifier;
        let email_attempts = settings
            .email
            .smtp_url
            .is_some()
            .then_some(settings.email.max_attempts);
        if email_attempts.is_none() {
            tracing::info!("notifier.email.smtp_url is not set: no e-mails to customers");
        }
        let notifier = Notifier::new(
            AvroDecoder::new(self.registry_client()?, ids),
            self.enqueuer().await?,
            settings.webhooks.clone(),
            email_attempts,
            vec![Arc::new(tributary_shop_tasks::InvoiceOnPaid)],
        );
        let wiring = self.wiring(
            settings.consumer.group_or(tributary_notifier::GROUP),
            vec![self.topic(Topic::Orders), self.topic(Topic::Customers)],
        );
        Consumer::new(
            self.pool.clone(),
            notifier,
            &wiring,
            settings.consumer.clone(),
        )
    }

    /// The process manager in its configured consumer group.
    pub async fn process_manager(&self) -> anyhow::Result<Consumer<ProcessManager>> {
        let ids = self.contract_ids().await?;
        let orders = Orders::new(self.pool.clone(), &ids, &self.settings.kafka.topic_prefix)?;
        let group = self
            .settings
            .process_manager
            .group_or(tributary_process_manager::GROUP);
        let manager = ProcessManager::new(
            orders,
            AvroDecoder::new(self.registry_client()?, ids),
            group.to_owned(),
            self.process_manager_dead_letters(),
        );
        let settings = &self.settings.process_manager;
        let wiring = self.wiring(
            settings.group_or(tributary_process_manager::GROUP),
            vec![self.topic(Topic::Payments), self.topic(Topic::Shipments)],
        );
        Consumer::new(self.pool.clone(), manager, &wiring, settings.clone())
    }

    /// Spawns `role` (every role for [`Role::All`]) under `shutdown`. HTTP
    /// roles serve on the listeners given, or bind their configured address.
    pub async fn spawn(
        &self,
        role: Role,
        listeners: Listeners,
        shutdown: &mut Shutdown,
    ) -> anyhow::Result<()> {
        let token = shutdown.token();
        if matches!(role, Role::Api | Role::Query | Role::Registry | Role::All) {
            self.settings.auth.validate()?;
        }
        let Listeners {
            registry,
            api,
            query,
        } = listeners;
        if matches!(role, Role::Registry | Role::All) {
            let listener = or_bind(registry, self.settings.registry.listen).await?;
            let router = tributary_registry::router(self.pool.clone(), self.auth()?);
            shutdown.spawn("registry", serve_on(listener, router, token.clone()));
        }
        if matches!(
            role,
            Role::Relay
                | Role::Projector
                | Role::ProcessManager
                | Role::Notifier
                | Role::Worker
                | Role::All
        ) {
            self.ensure_topics().await?;
        }
        if matches!(role, Role::Relay | Role::All) {
            let relay = self.relay()?;
            let token = token.clone();
            shutdown.spawn("relay", async move { relay.run(token).await });
        }
        if matches!(role, Role::Projector | Role::All) {
            let projector = self.projector().await?;
            let token = token.clone();
            shutdown.spawn(
                "projector",
                async move { projector.run(token).await.map(drop) },
            );
        }
        if matches!(role, Role::ProcessManager | Role::All) {
            let manager = self.process_manager().await?;
            let token = token.clone();
            shutdown.spawn("process-manager", async move {
                manager.run(token).await.map(drop)
            });
        }
        if matches!(role, Role::Notifier | Role::All) {
            let notifier = self.notifier().await?;
            let token = token.clone();
            shutdown.spawn(
                "notifier",
                async move { notifier.run(token).await.map(drop) },
            );
        }
        if matches!(role, Role::Worker | Role::All) {
            let worker = self.task_worker().await?;
            let token = token.clone();
            shutdown.spawn("worker", async move { worker.run(token).await.map(drop) });
        }
        if matches!(role, Role::Scheduler | Role::All) {
            let scheduler = self.scheduler().await?;
            let token = token.clone();
            shutdown.spawn("scheduler", async move { scheduler.run(token).await });
        }
        if matches!(role, Role::Api | Role::All) {
            let listener = or_bind(api, self.settings.api.listen).await?;
            let router = self.command_router().await?;
            shutdown.spawn("api", serve_on(listener, router, token.clone()));
        }
        if matches!(role, Role::Query | Role::All) {
            let listener = or_bind(query, self.settings.query.listen).await?;
            let watermarks = tributary_query::Watermarks::new(
                &self.settings.kafka,
                &self.cluster.bootstrap_servers(),
            )?;
            let router = tributary_query::router(
                self.pool.clone(),
                &self.settings.query,
                self.auth()?,
                watermarks,
            );
            shutdown.spawn("query", serve_on(listener, router, token.clone()));
        }
        Ok(())
    }
}

/// Listeners bound before the roles start; a role without one binds its configured address.
#[derive(Debug, Default)]
pub struct Listeners {
    /// For the schema registry.
    pub registry: Option<TcpListener>,
    /// For the command API.
    pub api: Option<TcpListener>,
    /// For the query API.
    pub query: Option<TcpListener>,
}

impl Listeners {
    /// Binds every HTTP role to a free port on 127.0.0.1, and points
    /// `settings` (the registry URL, the listen addresses) at them.
    pub async fn ephemeral(settings: &mut Settings) -> anyhow::Result<Self> {
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let (registry, api, query) = (bind(any).await?, bind(any).await?, bind(any).await?);
        settings.registry.listen = registry.local_addr()?;
        settings.registry.url = format!("http://{}", settings.registry.listen);
        settings.api.listen = api.local_addr()?;
        settings.query.listen = query.local_addr()?;
        Ok(Self {
            registry: Some(registry),
            api: Some(api),
            query: Some(query),
        })
    }
}

async fn or_bind(
    listener: Option<TcpListener>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<TcpListener> {
    match listener {
        Some(listener) => Ok(listener),
        None => bind(addr).await,
    }
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}
