//! Listing dead letters and showing one, its value decoded through the registry.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value as Json;
use tributary_registry::RegistryClient;
use tributary_schemas::framing;

use super::{
    DeadLetterAdmin,
    letter::{DlqId, Filter, Letter, select_groups},
    scan::{Partition, Scan, partitions},
};

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
pub(super) async fn list(admin: &DeadLetterAdmin, filter: &Filter) -> anyhow::Result<Vec<Listed>> {
    let groups = select_groups(&admin.groups, &filter.groups)?;
    let limit = filter.limit.unwrap_or(usize::MAX);
    let mut listed = Vec::new();
    for group in &groups {
        let mut scan = Scan::start(admin, &admin.dead_letters_of(&group.name)).await?;
        while listed.len() < limit {
            let Some(message) = scan.next().await? else {
                break;
            };
            let letter = Letter::new(&group.name, message);
            if letter.matches(filter, &admin.kafka) {
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
pub(super) async fn show(admin: &DeadLetterAdmin, id: &DlqId) -> anyhow::Result<Shown> {
    let known = &admin.groups;
    let group = known
        .iter()
        .find(|g| admin.dead_letters_of(&g.name) == id.topic)
        .ok_or_else(|| {
            let topics: Vec<String> = known
                .iter()
                .map(|g| admin.dead_letters_of(&g.name))
                .collect();
            anyhow!(
                "{} is not a dead-letter topic of ours (dead-letter topics: {})",
                id.topic,
                topics.join(", ")
            )
        })?;
    let partitions = partitions(admin, &id.topic).await?;
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
        admin,
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
    let registry = admin.registry.clone();
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
