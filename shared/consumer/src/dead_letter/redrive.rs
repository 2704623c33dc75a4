//! Redrives: a group's dead letters produced back to their original topics,
//! each recorded in `consumer.redrives` once the broker acknowledged it.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use serde::Serialize;
use sqlx::{Connection as _, PgConnection};

use super::{
    DeadLetterAdmin, REDRIVE_COUNT, REDRIVEN_FROM,
    letter::{DlqId, Filter, Letter, OUTBOX_HEADERS, dead_letter_header, select_groups},
    scan::Scan,
};

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
pub(super) async fn redrive(
    admin: &DeadLetterAdmin,
    options: &Redrive,
    mut report: impl FnMut(&Redriven),
    mut progress: impl FnMut(&RedriveProgress),
) -> anyhow::Result<RedriveSummary> {
    let group = select_groups(&admin.groups, std::slice::from_ref(&options.group))?
        .pop()
        .context("a group")?;
    if options.rate == 0 {
        bail!("the rate must be at least 1 per second");
    }
    let dlq_topic = admin.dead_letters_of(&group.name);
    let inputs: Vec<String> = group
        .inputs
        .iter()
        .map(|name| admin.kafka.topic(name))
        .collect();

    // Held until the end: a second redrive of this topic waits for no one, it refuses.
    let mut lock = admin
        .pool
        .acquire()
        .await
        .context("connecting to PostgreSQL")?
        .detach();
    let lock_name = format!("tributary-dlq-redrive:{dlq_topic}");
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS "locked!""#,
        lock_name
    )
    .fetch_one(&mut lock)
    .await
    .context("locking the dead-letter topic for the redrive")?;
    if !locked {
        bail!("another redrive of {dlq_topic} is running");
    }

    let producer: FutureProducer = admin
        .kafka
        .producer_config(&admin.bootstrap_servers, "tributary-ctl-dlq-redrive")
        .create()
        .context("creating the redrive's Kafka producer")?;
    let period = Duration::from_secs(1) / options.rate;
    let mut pace = tokio::time::interval(period.max(Duration::from_micros(1)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut scan = Scan::start(admin, &dlq_topic).await?;
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
        if letter.matches(&options.filter, &admin.kafka) {
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
    sqlx::query!(
        "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
        lock_name
    )
    .fetch_one(&mut lock)
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
    let recorded: Option<DateTime<Utc>> = sqlx::query_scalar!(
        "SELECT redriven_at FROM consumer.redrives
         WHERE dlq_topic = $1 AND dlq_partition = $2 AND dlq_offset = $3",
        id.topic,
        id.partition,
        id.offset,
    )
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
    sqlx::query!(
        "INSERT INTO consumer.redrives
           (dlq_topic, dlq_partition, dlq_offset, redriven_at, target_topic,
            target_partition, target_offset, redrive_count)
         VALUES ($1, $2, $3, now(), $4, $5, $6, $7)
         ON CONFLICT DO NOTHING",
        id.topic,
        id.partition,
        id.offset,
        topic,
        partition,
        offset,
        i32::try_from(count).unwrap_or(i32::MAX),
    )
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
    let count: Option<i32> = sqlx::query_scalar!(
        "SELECT max(redrive_count) FROM consumer.redrives
         WHERE target_topic = $1 AND target_partition = $2 AND target_offset = $3",
        topic,
        partition,
        offset,
    )
    .fetch_one(&mut *conn)
    .await
    .context("reading consumer.redrives")?;
    Ok(count.map_or(0, |c| u32::try_from(c).unwrap_or(0)))
}
