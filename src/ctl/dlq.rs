//! `tributary ctl dlq list|show|redrive`: the operators' dead-letter tool.
//!
//! Every consumer group we run has a dead-letter topic `<group>.dlq`. This
//! reads them from the beginning to their high watermarks with an assigned
//! consumer (it joins no group and commits nothing), so listing never
//! disturbs a running role.
//!
//! A dead letter is named by `<dlq topic>:<partition>:<offset>`. A redrive
//! produces the original key, value and headers back to the original topic
//! with `redrive_count` (previous + 1) and `redriven_from` (the id), through
//! an idempotent producer at a limited rate, and records it in
//! `consumer.redrives` once the broker acknowledged it. Recorded ids are
//! never redriven again; nor is a dead letter already redriven
//! `--max-redrives` times (the loop guard).

use std::{
    collections::BTreeMap,
    fmt,
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand, value_parser};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer as _, StreamConsumer},
    error::KafkaError,
    message::{Header, Headers, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
};
use serde::Serialize;
use serde_json::Value as Json;
use sqlx::{Connection as _, PgConnection};
use tributary_registry::RegistryClient;
use tributary_schemas::{Topic, framing};

use crate::{App, Settings};

/// Whether `key` is a header a dead-letter topic adds (the consumer
/// runtime's and the outbox's) or a redrive's own: none of them goes back to
/// the original topic.
fn dead_letter_header(key: &str) -> bool {
    tributary_consumer::DEAD_LETTER_HEADERS.contains(&key)
        || key == REDRIVE_COUNT
        || key == REDRIVEN_FROM
}

/// Headers of a dead letter the process manager wrote through the outbox
/// before it carried the original's headers on (no `consumer_group`): they
/// describe the dead letter, not the original event.
const OUTBOX_HEADERS: [&str; 3] = ["event_id", "producer", "occurred_at"];

/// How many times a message has been redriven.
pub const REDRIVE_COUNT: &str = "redrive_count";
/// The id of the dead letter a message was redriven from.
pub const REDRIVEN_FROM: &str = "redriven_from";

/// How long a read waits for the next message below the high watermark.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long metadata and watermark requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of the error shown in the table.
const ERROR_WIDTH: usize = 60;

/// Dead-letter commands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the dead letters of every consumer group (or of --group), oldest
    /// first per partition: a table, or one JSON object per line.
    List {
        /// Only this consumer group's dead letters (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per dead letter, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: every header, the key, and the value decoded to
    /// JSON through the schema registry (else its bytes as base64, and why).
    Show {
        /// `<dlq topic>:<partition>:<offset>`, as `list` prints it.
        id: DlqId,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Produce a group's dead letters back to their original topics, at most
    /// --rate per second; each one once, and none already redriven
    /// --max-redrives times.
    Redrive {
        /// The consumer group whose dead letters to redrive.
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// Dead letters produced per second, at most.
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = value_parser!(u32).range(1..))]
        rate: u32,
        /// Skip a dead letter whose redrive_count is already this many.
        #[arg(long, value_name = "K", default_value_t = 3, value_parser = value_parser!(u32).range(1..))]
        max_redrives: u32,
        /// Say what would be redriven; produce and record nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object per dead letter, then a summary object.
        #[arg(long)]
        json: bool,
    },
}

/// Filters shared by `list` and `redrive`.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Only dead letters from this original topic (its full name, or its
    /// name before the deployment's topic prefix).
    #[arg(long, value_name = "ORIGINAL_TOPIC")]
    topic: Option<String>,
    /// Only dead letters whose error contains this (case-insensitive).
    #[arg(long, value_name = "SUBSTRING")]
    error: Option<String>,
    /// Only dead letters dead-lettered at or after this time.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only dead letters dead-lettered before this time.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// At most this many dead letters.
    #[arg(long, value_name = "N", value_parser = value_parser!(u64).range(1..))]
    limit: Option<u64>,
}

impl FilterArgs {
    fn into_filter(self, groups: Vec<String>) -> Filter {
        Filter {
            groups,
            topic: self.topic,
            error: self.error,
            since: self.since,
            until: self.until,
            limit: self.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|error| format!("{error} (expected RFC 3339, e.g. 2025-01-31T12:00:00Z)"))
}

/// Which dead letters a command looks at.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Consumer groups; every group we run when empty.
    pub groups: Vec<String>,
    /// The original topic: its full name, or its name before the topic prefix.
    pub topic: Option<String>,
    /// A substring of the error, case-insensitive.
    pub error: Option<String>,
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub until: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// The name of one dead letter: `<dlq topic>:<partition>:<offset>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DlqId {
    /// The dead-letter topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

impl FromStr for DlqId {
    type Err = String;

    fn from_str(id: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{why} (expected <dlq topic>:<partition>:<offset>)");
        let mut parts = id.rsplitn(3, ':');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not three parts separated by ':'"));
        };
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
            return Err(bad(&format!("{topic:?} is not a Kafka topic name")));
        }
        let partition: i32 = partition
            .parse()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| bad(&format!("partition {partition:?} is not a number >= 0")))?;
        let offset: i64 = offset
            .parse()
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| bad(&format!("offset {offset:?} is not a number >= 0")))?;
        Ok(Self {
            topic: topic.to_owned(),
            partition,
            offset,
        })
    }
}

impl fmt::Display for DlqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

impl Serialize for DlqId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A consumer group we run, with what its dead letters may go back to.
#[derive(Debug, Clone)]
struct Group {
    name: String,
    /// The topics the group consumes: the only places a redrive may produce to.
    /// (Their names before the deployment's topic prefix.)
    inputs: Vec<String>,
}

/// The consumer groups we run, named from settings the way [`App`] names them.
fn groups(settings: &Settings) -> Vec<Group> {
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
                .group_or(tributary_commands::process_manager::GROUP)
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

/// The groups named (every group when none is), refusing an unknown one.
fn select_groups(settings: &Settings, wanted: &[String]) -> anyhow::Result<Vec<Group>> {
    let known = groups(settings);
    if wanted.is_empty() {
        return Ok(known);
    }
    wanted
        .iter()
        .map(|name| {
            known
                .iter()
                .find(|g| &g.name == name)
                .cloned()
                .ok_or_else(|| unknown_group(name, &known))
        })
        .collect()
}

fn unknown_group(name: &str, known: &[Group]) -> anyhow::Error {
    let names: Vec<&str> = known.iter().map(|g| g.name.as_str()).collect();
    anyhow!(
        "there is no consumer group {name:?} (groups: {})",
        names.join(", ")
    )
}

/// One dead letter as read from its topic.
#[derive(Debug, Clone)]
struct Letter {
    id: DlqId,
    group: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<DateTime<Utc>>,
}

impl Letter {
    fn new(group: &str, message: OwnedMessage) -> Self {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id: DlqId {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
            group: group.to_owned(),
            timestamp: message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The last header `name` as text.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Written through the outbox by a handler, rather than by the consumer runtime.
    fn through_outbox(&self) -> bool {
        self.header("consumer_group").is_none() && self.header("dead_lettered_at").is_none()
    }

    /// When it was dead-lettered: the runtime's `dead_lettered_at`, the
    /// outbox's `occurred_at`, else the Kafka timestamp.
    fn at(&self) -> Option<DateTime<Utc>> {
        let header = if self.through_outbox() {
            "occurred_at"
        } else {
            "dead_lettered_at"
        };
        self.header(header)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or(self.timestamp)
    }

    /// The `redrive_count` header: 0 when absent.
    fn redrive_count(&self) -> Result<u32, String> {
        match self.header(REDRIVE_COUNT) {
            None => Ok(0),
            Some(count) => count
                .trim()
                .parse()
                .map_err(|_| format!("its redrive_count header {count:?} is not a number")),
        }
    }

    fn matches(&self, filter: &Filter, settings: &Settings) -> bool {
        if let Some(topic) = &filter.topic {
            let original = self.header("original_topic");
            if original != Some(topic) && original != Some(&settings.kafka.topic(topic)) {
                return false;
            }
        }
        if let Some(wanted) = &filter.error {
            let error = self.header("error").unwrap_or_default().to_lowercase();
            if !error.contains(&wanted.to_lowercase()) {
                return false;
            }
        }
        if filter.since.is_some() || filter.until.is_some() {
            let Some(at) = self.at() else { return false };
            if filter.since.is_some_and(|since| at < since)
                || filter.until.is_some_and(|until| at >= until)
            {
                return false;
            }
        }
        true
    }

    fn listed(&self) -> Listed {
        Listed {
            id: self.id.clone(),
            group: self.group.clone(),
            original_topic: self.header("original_topic").map(str::to_owned),
            original_partition: self
                .header("original_partition")
                .and_then(|p| p.parse().ok()),
            original_offset: self.header("original_offset").and_then(|o| o.parse().ok()),
            dead_lettered_at: self.at(),
            error: self.header("error").map(str::to_owned),
            schema_id: self.header("schema_id").and_then(|s| s.parse().ok()),
            redrive_count: self.redrive_count().unwrap_or_default(),
            key: self
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
        }
    }
}

/// A dead letter as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// `<dlq topic>:<partition>:<offset>`.
    pub id: DlqId,
    /// The consumer group that dead-lettered it.
    pub group: String,
    /// Where it came from.
    pub original_topic: Option<String>,
    /// Its partition there.
    pub original_partition: Option<i32>,
    /// Its offset there.
    pub original_offset: Option<i64>,
    /// When it was dead-lettered.
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// Why.
    pub error: Option<String>,
    /// The value's writer schema id, when it had one.
    pub schema_id: Option<u32>,
    /// How many times it had been redriven before it was dead-lettered.
    pub redrive_count: u32,
    /// The key (lossy UTF-8).
    pub key: Option<String>,
}

/// Lists the dead letters matching `filter`, per group, per partition, in offset order.
pub async fn list(app: &App, filter: &Filter) -> anyhow::Result<Vec<Listed>> {
    let groups = select_groups(&app.settings, &filter.groups)?;
    let limit = filter.limit.unwrap_or(usize::MAX);
    let mut listed = Vec::new();
    for group in &groups {
        let mut scan = Scan::start(app, &app.dead_letters_of(&group.name)).await?;
        while listed.len() < limit {
            let Some(message) = scan.next().await? else {
                break;
            };
            let letter = Letter::new(&group.name, message);
            if letter.matches(filter, &app.settings) {
                listed.push(letter.listed());
            }
        }
    }
    Ok(listed)
}

/// One dead letter in full, as `show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// `<dlq topic>:<partition>:<offset>`.
    pub id: DlqId,
    /// The consumer group that dead-lettered it.
    pub group: String,
    /// The Kafka timestamp of the dead letter.
    pub timestamp: Option<DateTime<Utc>>,
    /// Every header (lossy UTF-8; the last one of a repeated name).
    pub headers: BTreeMap<String, Option<String>>,
    /// The key, when it is UTF-8.
    pub key: Option<String>,
    /// The key as base64, when it is not UTF-8.
    pub key_base64: Option<String>,
    /// The value's writer schema id, when it is Confluent-framed.
    pub schema_id: Option<u32>,
    /// The writer schema's record name, when the registry knows the id.
    pub schema: Option<String>,
    /// The value decoded to JSON with its writer schema.
    pub value: Option<Json>,
    /// The value as base64, when it could not be decoded.
    pub value_base64: Option<String>,
    /// Why the value could not be decoded.
    pub undecoded: Option<String>,
}

/// Reads the dead letter `id` and decodes its value through the registry.
pub async fn show(app: &App, id: &DlqId) -> anyhow::Result<Shown> {
    let known = groups(&app.settings);
    let group = known
        .iter()
        .find(|g| app.dead_letters_of(&g.name) == id.topic)
        .ok_or_else(|| {
            let topics: Vec<String> = known.iter().map(|g| app.dead_letters_of(&g.name)).collect();
            anyhow!(
                "{} is not a dead-letter topic of ours (dead-letter topics: {})",
                id.topic,
                topics.join(", ")
            )
        })?;
    let partitions = partitions(app, &id.topic).await?;
    let partition = partitions
        .iter()
        .find(|p| p.id == id.partition)
        .ok_or_else(|| {
            anyhow!(
                "{} has no partition {} ({} partitions)",
                id.topic,
                id.partition,
                partitions.len()
            )
        })?;
    if !(partition.low..partition.high).contains(&id.offset) {
        bail!(
            "there is no dead letter {id}: partition {} of {} holds offsets {} to {}",
            id.partition,
            id.topic,
            partition.low,
            partition.high - 1
        );
    }
    let mut scan = Scan::new(
        app,
        &id.topic,
        vec![Partition {
            id: id.partition,
            low: id.offset,
            high: id.offset + 1,
        }],
    )?;
    let message = scan
        .next()
        .await?
        .ok_or_else(|| anyhow!("there is no dead letter {id}"))?;
    let letter = Letter::new(&group.name, message);

    let base64 = base64::engine::general_purpose::STANDARD;
    let (key, key_base64) = match letter.key.as_deref() {
        None => (None, None),
        Some(key) => match std::str::from_utf8(key) {
            Ok(key) => (Some(key.to_owned()), None),
            Err(_) => (None, Some(base64.encode(key))),
        },
    };
    let registry = app.registry_client()?;
    let decoded = decode_value(&registry, letter.value.as_deref()).await;
    let schema_id = letter
        .value
        .as_deref()
        .and_then(|v| framing::split(v).ok())
        .map(|(id, _)| id);
    let (schema, value, value_base64, undecoded) = match decoded {
        Ok((schema, value)) => (Some(schema), Some(value), None, None),
        Err(Undecoded { schema, reason }) => (
            schema,
            None,
            letter.value.as_deref().map(|v| base64.encode(v)),
            Some(reason),
        ),
    };
    Ok(Shown {
        id: letter.id.clone(),
        group: letter.group.clone(),
        timestamp: letter.timestamp,
        headers: letter
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_deref()
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect(),
        key,
        key_base64,
        schema_id,
        schema,
        value,
        value_base64,
        undecoded,
    })
}

/// Why a value is shown as bytes.
struct Undecoded {
    schema: Option<String>,
    reason: String,
}

/// Decodes a Confluent-framed value with its writer schema (found by id) to JSON.
async fn decode_value(
    registry: &RegistryClient,
    value: Option<&[u8]>,
) -> Result<(String, Json), Undecoded> {
    let fail = |schema: Option<&str>, reason: String| Undecoded {
        schema: schema.map(str::to_owned),
        reason,
    };
    let value = value.ok_or_else(|| fail(None, "the dead letter has no value".into()))?;
    let (id, mut datum) = framing::split(value).map_err(|error| fail(None, error.to_string()))?;
    let writer = registry
        .schema_by_id(id)
        .await
        .map_err(|error| fail(None, format!("schema id {id}: {error}")))?;
    let name = writer.full_name.as_str();
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&writer.schema)
        .build()
        .map_err(|error| fail(Some(name), format!("schema id {id} ({name}): {error}")))?;
    let decoded = reader.read_value(&mut datum).map_err(|error| {
        fail(
            Some(name),
            format!("the bytes do not match schema id {id} ({name}): {error}"),
        )
    })?;
    if !datum.is_empty() {
        return Err(fail(
            Some(name),
            format!(
                "{} bytes left over after a {name} datum (schema id {id})",
                datum.len()
            ),
        ));
    }
    let json = Json::try_from(decoded)
        .map_err(|error| fail(Some(name), format!("not representable as JSON: {error}")))?;
    Ok((name.to_owned(), json))
}

/// What `redrive` is asked to do.
#[derive(Debug, Clone)]
pub struct Redrive {
    /// The consumer group whose dead letters to redrive.
    pub group: String,
    /// Which of them (`filter.groups` is ignored).
    pub filter: Filter,
    /// Dead letters produced per second, at most (at least 1).
    pub rate: u32,
    /// Skip a dead letter whose redrive count is already this many.
    pub max_redrives: u32,
    /// Produce and record nothing.
    pub dry_run: bool,
}

/// What happened to one dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct Redriven {
    /// The dead letter.
    pub id: DlqId,
    /// `redriven`, `would_redrive` (dry run) or `skipped`.
    pub outcome: &'static str,
    /// Why it was skipped.
    pub reason: Option<String>,
    /// Where it goes (or would go) back to.
    pub target_topic: Option<String>,
    /// The copy's `redrive_count`.
    pub redrive_count: Option<u32>,
    /// The copy's partition, once acknowledged.
    pub partition: Option<i32>,
    /// The copy's offset, once acknowledged.
    pub offset: Option<i64>,
}

/// Where a redrive is, reported about once a second.
#[derive(Debug, Clone, Serialize)]
pub struct RedriveProgress {
    /// Dead letters read so far.
    pub scanned: u64,
    /// Dead letters on the group's dead-letter topic when the redrive started.
    pub total: u64,
    /// Redriven so far.
    pub redriven: u64,
    /// Skipped so far.
    pub skipped: u64,
}

/// A finished redrive.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveSummary {
    /// The group.
    pub group: String,
    /// Dead letters read.
    pub scanned: u64,
    /// Dead letters that matched the filter.
    pub matched: u64,
    /// Produced back and recorded.
    pub redriven: u64,
    /// What a dry run would have produced.
    pub would_redrive: u64,
    /// Skipped, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Dry run: nothing was produced or recorded.
    pub dry_run: bool,
}

/// Redrives the group's dead letters matching the filter; `report` hears
/// of each one, `progress` about once a second. One redrive per
/// dead-letter topic runs at a time (a PostgreSQL advisory lock).
pub async fn redrive(
    app: &App,
    options: &Redrive,
    mut report: impl FnMut(&Redriven),
    mut progress: impl FnMut(&RedriveProgress),
) -> anyhow::Result<RedriveSummary> {
    let group = select_groups(&app.settings, std::slice::from_ref(&options.group))?
        .pop()
        .context("a group")?;
    if options.rate == 0 {
        bail!("the rate must be at least 1 per second");
    }
    let dlq_topic = app.dead_letters_of(&group.name);
    let inputs: Vec<String> = group
        .inputs
        .iter()
        .map(|name| app.settings.kafka.topic(name))
        .collect();

    // Held until the end: a second redrive of this topic waits for no one, it refuses.
    let mut lock = app
        .pool
        .acquire()
        .await
        .context("connecting to PostgreSQL")?
        .detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("tributary-dlq-redrive:{dlq_topic}"))
        .fetch_one(&mut lock)
        .await
        .context("locking the dead-letter topic for the redrive")?;
    if !locked {
        bail!("another redrive of {dlq_topic} is running");
    }

    let producer: FutureProducer = app
        .settings
        .kafka
        .producer_config(
            &app.cluster.bootstrap_servers(),
            "tributary-ctl-dlq-redrive",
        )
        .create()
        .context("creating the redrive's Kafka producer")?;
    let period = Duration::from_secs(1) / options.rate;
    let mut pace = tokio::time::interval(period.max(Duration::from_micros(1)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut scan = Scan::start(app, &dlq_topic).await?;
    let mut summary = RedriveSummary {
        group: group.name.clone(),
        dry_run: options.dry_run,
        ..RedriveSummary::default()
    };
    let limit = options.filter.limit.unwrap_or(usize::MAX) as u64;
    let mut last_progress = Instant::now();
    while summary.matched < limit {
        let Some(message) = scan.next().await? else {
            break;
        };
        summary.scanned += 1;
        let letter = Letter::new(&group.name, message);
        if letter.matches(&options.filter, &app.settings) {
            summary.matched += 1;
            let outcome =
                redrive_one(&mut lock, &producer, &mut pace, options, &inputs, &letter).await?;
            match (outcome.outcome, &outcome.reason) {
                ("redriven", _) => summary.redriven += 1,
                ("would_redrive", _) => summary.would_redrive += 1,
                (_, reason) => {
                    *summary
                        .skipped
                        .entry(reason.clone().unwrap_or_default())
                        .or_default() += 1;
                }
            }
            report(&outcome);
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(&RedriveProgress {
                scanned: summary.scanned,
                total: scan.total(),
                redriven: summary.redriven + summary.would_redrive,
                skipped: summary.skipped.values().sum(),
            });
        }
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(format!("tributary-dlq-redrive:{dlq_topic}"))
        .execute(&mut lock)
        .await
        .context("unlocking the dead-letter topic")?;
    lock.close().await.ok();
    Ok(summary)
}

async fn redrive_one(
    conn: &mut PgConnection,
    producer: &FutureProducer,
    pace: &mut tokio::time::Interval,
    options: &Redrive,
    inputs: &[String],
    letter: &Letter,
) -> anyhow::Result<Redriven> {
    let target = letter.header("original_topic").map(str::to_owned);
    let skipped = |reason: String| Redriven {
        id: letter.id.clone(),
        outcome: "skipped",
        reason: Some(reason),
        target_topic: target.clone(),
        redrive_count: None,
        partition: None,
        offset: None,
    };
    let Some(topic) = target.as_deref() else {
        return Ok(skipped("no original_topic header".into()));
    };
    if !inputs.iter().any(|input| input == topic) {
        return Ok(skipped(format!(
            "original topic {topic} is not consumed by {}",
            letter.group
        )));
    }
    let id = &letter.id;
    let recorded: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT redriven_at FROM consumer.redrives
         WHERE dlq_topic = $1 AND dlq_partition = $2 AND dlq_offset = $3",
    )
    .bind(&id.topic)
    .bind(id.partition)
    .bind(id.offset)
    .fetch_optional(&mut *conn)
    .await
    .context("reading consumer.redrives")?;
    if recorded.is_some() {
        return Ok(skipped("already redriven".into()));
    }
    let previous = match letter.redrive_count() {
        Ok(count) => count.max(lineage_count(conn, letter).await?),
        Err(reason) => return Ok(skipped(reason)),
    };
    if previous >= options.max_redrives {
        let times = if previous == 1 { "time" } else { "times" };
        return Ok(skipped(format!("redriven {previous} {times}")));
    }
    let count = previous + 1;
    if options.dry_run {
        return Ok(Redriven {
            outcome: "would_redrive",
            reason: None,
            redrive_count: Some(count),
            ..skipped(String::new())
        });
    }

    let outbox = letter.through_outbox();
    let count_text = count.to_string();
    let from = id.to_string();
    let mut headers = OwnedHeaders::new();
    for (key, value) in &letter.headers {
        let own = dead_letter_header(key) || (outbox && OUTBOX_HEADERS.contains(&key.as_str()));
        if !own {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
    }
    for (key, value) in [(REDRIVE_COUNT, &count_text), (REDRIVEN_FROM, &from)] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = letter.key.as_deref() {
        record = record.key(key);
    }
    if let Some(value) = letter.value.as_deref() {
        record = record.payload(value);
    }
    pace.tick().await;
    let rdkafka::producer::future_producer::Delivery {
        partition, offset, ..
    } = producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(error, _)| error)
        .with_context(|| format!("producing {id} back to {topic}"))?;
    sqlx::query(
        "INSERT INTO consumer.redrives
           (dlq_topic, dlq_partition, dlq_offset, redriven_at, target_topic,
            target_partition, target_offset, redrive_count)
         VALUES ($1, $2, $3, now(), $4, $5, $6, $7)
         ON CONFLICT DO NOTHING",
    )
    .bind(&id.topic)
    .bind(id.partition)
    .bind(id.offset)
    .bind(topic)
    .bind(partition)
    .bind(offset)
    .bind(i32::try_from(count).unwrap_or(i32::MAX))
    .execute(&mut *conn)
    .await
    .with_context(|| {
        format!(
            "recording the redrive of {id} (it was produced to {topic} partition {partition} offset {offset}: do not redrive it again)"
        )
    })?;
    Ok(Redriven {
        id: id.clone(),
        outcome: "redriven",
        reason: None,
        target_topic: Some(topic.to_owned()),
        redrive_count: Some(count),
        partition: Some(partition),
        offset: Some(offset),
    })
}

/// The redrive count of the copy this dead letter was made from, when it
/// was one of ours: found by where the copy landed, for dead letters that
/// do not carry the copy's headers.
async fn lineage_count(conn: &mut PgConnection, letter: &Letter) -> anyhow::Result<u32> {
    let origin = (
        letter.header("original_topic"),
        letter
            .header("original_partition")
            .and_then(|p| p.parse::<i32>().ok()),
        letter
            .header("original_offset")
            .and_then(|o| o.parse::<i64>().ok()),
    );
    let (Some(topic), Some(partition), Some(offset)) = origin else {
        return Ok(0);
    };
    let count: Option<i32> = sqlx::query_scalar(
        "SELECT max(redrive_count) FROM consumer.redrives
         WHERE target_topic = $1 AND target_partition = $2 AND target_offset = $3",
    )
    .bind(topic)
    .bind(partition)
    .bind(offset)
    .fetch_one(&mut *conn)
    .await
    .context("reading consumer.redrives")?;
    Ok(count.map_or(0, |c| u32::try_from(c).unwrap_or(0)))
}

/// A partition and the offsets to read from it: `low..high`.
#[derive(Debug, Clone, Copy)]
struct Partition {
    id: i32,
    low: i64,
    high: i64,
}

/// The partitions of `topic` with their watermarks; none when it does not exist.
async fn partitions(app: &App, topic: &str) -> anyhow::Result<Vec<Partition>> {
    let config = app
        .settings
        .kafka
        .client_config(&app.cluster.bootstrap_servers());
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Partition>> {
        let consumer: BaseConsumer = config.create().context("creating a Kafka client")?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
            .with_context(|| format!("reading the metadata of {topic}"))?;
        let Some(found) = metadata.topics().first().filter(|t| t.error().is_none()) else {
            return Ok(Vec::new());
        };
        let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, id, METADATA_TIMEOUT)
                    .with_context(|| format!("reading the offsets of {topic} partition {id}"))?;
                Ok(Partition { id, low, high })
            })
            .collect()
    })
    .await?
}

/// Reads partitions one after the other, each from `low` to `high`, with
/// an assigned consumer: no group is joined, nothing is committed.
struct Scan {
    consumer: StreamConsumer,
    topic: String,
    partitions: Vec<Partition>,
    index: usize,
    next: Option<i64>,
}

impl Scan {
    /// Every partition of `topic`, from the beginning to the high watermarks now.
    async fn start(app: &App, topic: &str) -> anyhow::Result<Self> {
        let partitions = partitions(app, topic).await?;
        Self::new(app, topic, partitions)
    }

    fn new(app: &App, topic: &str, partitions: Vec<Partition>) -> anyhow::Result<Self> {
        let mut config = app
            .settings
            .kafka
            .consumer_config(&app.cluster.bootstrap_servers(), "tributary-ctl-dlq");
        config.set("enable.partition.eof", "true");
        Ok(Self {
            consumer: config.create().context("creating a Kafka consumer")?,
            topic: topic.to_owned(),
            partitions,
            index: 0,
            next: None,
        })
    }

    /// Messages the scan covers.
    fn total(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| u64::try_from(p.high - p.low).unwrap_or_default())
            .sum()
    }

    async fn next(&mut self) -> anyhow::Result<Option<OwnedMessage>> {
        loop {
            let Some(partition) = self.partitions.get(self.index).copied() else {
                return Ok(None);
            };
            let next = match self.next {
                Some(next) => next,
                None => {
                    if partition.low < partition.high {
                        let mut assignment = TopicPartitionList::new();
                        assignment.add_partition_offset(
                            &self.topic,
                            partition.id,
                            Offset::Offset(partition.low),
                        )?;
                        self.consumer.assign(&assignment).with_context(|| {
                            format!("assigning {} partition {}", self.topic, partition.id)
                        })?;
                    }
                    self.next = Some(partition.low);
                    partition.low
                }
            };
            if next >= partition.high {
                self.index += 1;
                self.next = None;
                continue;
            }
            let received = tokio::time::timeout(READ_TIMEOUT, self.consumer.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "reading {} partition {}: offset {next} did not arrive within {} s",
                        self.topic,
                        partition.id,
                        READ_TIMEOUT.as_secs()
                    )
                })?;
            let message = match received {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(p)) if p == partition.id => {
                    // The end came before the watermark said: nothing more to read.
                    self.next = Some(partition.high);
                    continue;
                }
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("reading {} partition {}", self.topic, partition.id)
                    });
                }
            };
            // Left over from the previous partition's assignment, or already seen.
            if message.partition() != partition.id || message.offset() < next {
                continue;
            }
            self.next = Some(message.offset() + 1);
            if message.offset() < partition.high {
                return Ok(Some(message.detach()));
            }
        }
    }
}

/// Runs a dead-letter command.
pub async fn run(settings: Settings, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List {
            groups,
            filter,
            json,
        } => {
            // Refuse an unknown group before connecting to anything.
            select_groups(&settings, &groups)?;
            let app = App::connect(settings, false).await?;
            let listed = list(&app, &filter.into_filter(groups)).await?;
            if json {
                for letter in &listed {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                print_table(&listed);
            }
            Ok(())
        }
        DlqCommand::Show { id, json } => {
            let app = App::connect(settings, false).await?;
            let shown = show(&app, &id).await?;
            if json {
                println!("{}", serde_json::to_string(&shown)?);
            } else {
                print_shown(&shown)?;
            }
            Ok(())
        }
        DlqCommand::Redrive {
            group,
            filter,
            rate,
            max_redrives,
            dry_run,
            json,
        } => {
            select_groups(&settings, std::slice::from_ref(&group))?;
            let app = App::connect(settings, false).await?;
            let options = Redrive {
                group: group.clone(),
                filter: filter.into_filter(Vec::new()),
                rate,
                max_redrives,
                dry_run,
            };
            let summary = redrive(
                &app,
                &options,
                |outcome| {
                    if json {
                        println!("{}", serde_json::to_string(outcome).unwrap_or_default());
                    } else {
                        println!("{}", outcome_line(outcome));
                    }
                },
                |p| {
                    eprintln!(
                        "redriving {group}: {} of {} dead letters read, {} redriven, {} skipped",
                        p.scanned, p.total, p.redriven, p.skipped
                    );
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::json!({ "summary": summary }));
            } else {
                println!("{}", summary_line(&summary));
            }
            Ok(())
        }
    }
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn truncate(text: &str, width: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= width && line.len() == text.len() {
        return line.to_owned();
    }
    let cut: String = line.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn print_table(listed: &[Listed]) {
    if listed.is_empty() {
        println!("no dead letters");
        return;
    }
    let rows: Vec<[String; 6]> = listed
        .iter()
        .map(|l| {
            let origin = match (&l.original_topic, l.original_partition, l.original_offset) {
                (Some(t), Some(p), Some(o)) => format!("{t}:{p}:{o}"),
                (Some(t), _, _) => t.clone(),
                _ => "-".to_owned(),
            };
            [
                l.id.to_string(),
                l.group.clone(),
                origin,
                time(l.dead_lettered_at),
                l.redrive_count.to_string(),
                truncate(l.error.as_deref().unwrap_or("-"), ERROR_WIDTH),
            ]
        })
        .collect();
    let header = [
        "ID",
        "GROUP",
        "ORIGINAL",
        "DEAD-LETTERED",
        "REDRIVES",
        "ERROR",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == cells.len() - 1 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out
    };
    println!("{}", line(header));
    for row in &rows {
        println!("{}", line(row.each_ref().map(String::as_str)));
    }
    println!("{} dead letters", rows.len());
}

fn print_shown(shown: &Shown) -> anyhow::Result<()> {
    println!("id          {}", shown.id);
    println!("group       {}", shown.group);
    println!("timestamp   {}", time(shown.timestamp));
    println!("headers");
    for (key, value) in &shown.headers {
        println!("  {key}: {}", value.as_deref().unwrap_or("(null)"));
    }
    match (&shown.key, &shown.key_base64) {
        (Some(key), _) => println!("key         {key}"),
        (None, Some(key)) => println!("key         (base64) {key}"),
        (None, None) => println!("key         (none)"),
    }
    match (&shown.value, &shown.value_base64) {
        (Some(value), _) => {
            println!(
                "value       schema id {} ({})",
                shown.schema_id.unwrap_or_default(),
                shown.schema.as_deref().unwrap_or("?")
            );
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        (None, bytes) => {
            println!(
                "value       not decoded: {}",
                shown.undecoded.as_deref().unwrap_or("?")
            );
            if let Some(bytes) = bytes {
                println!("(base64) {bytes}");
            }
        }
    }
    Ok(())
}

fn outcome_line(outcome: &Redriven) -> String {
    match outcome.outcome {
        "redriven" => format!(
            "redriven       {} -> {} partition {} offset {} (redrive_count {})",
            outcome.id,
            outcome.target_topic.as_deref().unwrap_or("?"),
            outcome.partition.unwrap_or_default(),
            outcome.offset.unwrap_or_default(),
            outcome.redrive_count.unwrap_or_default()
        ),
        "would_redrive" => format!(
            "would redrive  {} -> {} (redrive_count {})",
            outcome.id,
            outcome.target_topic.as_deref().unwrap_or("?"),
            outcome.redrive_count.unwrap_or_default()
        ),
        _ => format!(
            "skipped        {}: {}",
            outcome.id,
            outcome.reason.as_deref().unwrap_or("?")
        ),
    }
}

fn summary_line(summary: &RedriveSummary) -> String {
    let skipped: u64 = summary.skipped.values().sum();
    let reasons: Vec<String> = summary
        .skipped
        .iter()
        .map(|(reason, n)| format!("{reason}: {n}"))
        .collect();
    let reasons = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join(", "))
    };
    if summary.dry_run {
        format!(
            "dry run for {}: would redrive {}, skipped {skipped}{reasons}; {} of {} read matched",
            summary.group, summary.would_redrive, summary.matched, summary.scanned
        )
    } else {
        format!(
            "{}: redriven {}, skipped {skipped}{reasons}; {} of {} read matched",
            summary.group, summary.redriven, summary.matched, summary.scanned
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_topic_partition_and_offset() {
        let id: DlqId = "t1.tributary-process-manager.dlq:2:17".parse().unwrap();
        assert_eq!(id.topic, "t1.tributary-process-manager.dlq");
        assert_eq!((id.partition, id.offset), (2, 17));
        assert_eq!(id.to_string(), "t1.tributary-process-manager.dlq:2:17");
    }

    #[test]
    fn malformed_ids_are_refused_with_the_reason() {
        for (id, why) in [
            ("no-colons", "three parts"),
            ("a.dlq:x:1", "partition \"x\""),
            ("a.dlq:-1:1", "partition \"-1\""),
            ("a.dlq:0:", "offset \"\""),
            (":0:1", "not a Kafka topic"),
            ("a/b:0:1", "not a Kafka topic"),
        ] {
            let error = id.parse::<DlqId>().unwrap_err();
            assert!(error.contains(why), "{id}: {error}");
        }
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            parse_time("2025-01-31T12:00:00+01:00").unwrap(),
            DateTime::parse_from_rfc3339("2025-01-31T11:00:00Z").unwrap()
        );
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn long_errors_are_truncated_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééééééééééé", 5), "éééé…");
        assert_eq!(truncate("one\ntwo", 10), "one…");
    }
}
