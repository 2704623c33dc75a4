//! Dead letters as operators see them: their name (`<dlq topic>:<partition>:<offset>`),
//! the consumer groups they belong to, the filter `list` and `redrive` take,
//! and one dead letter as read from its topic.

use std::{fmt, str::FromStr};

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use rdkafka::{
    Message,
    message::{Headers, OwnedMessage},
};
use serde::Serialize;
use tributary_platform::kafka::KafkaSettings;

use super::{HEADERS, Listed, REDRIVE_COUNT, REDRIVEN_FROM};

/// Whether `key` is a header a dead-letter topic adds (the consumer
/// runtime's and the outbox's) or a redrive's own: none of them goes back to
/// the original topic.
pub(crate) fn dead_letter_header(key: &str) -> bool {
    HEADERS.contains(&key) || key == REDRIVE_COUNT || key == REDRIVEN_FROM
}

/// Headers of a dead letter the process manager wrote through the outbox
/// before it carried the original's headers on (no `consumer_group`): they
/// describe the dead letter, not the original event.
pub(crate) const OUTBOX_HEADERS: [&str; 3] = ["event_id", "producer", "occurred_at"];

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
pub struct Group {
    /// The group's name.
    pub name: String,
    /// The topics the group consumes: the only places a redrive may produce to.
    /// (Their names before the deployment's topic prefix.)
    pub inputs: Vec<String>,
}

/// The groups named (every group when none is), refusing an unknown one.
pub fn select_groups(known: &[Group], wanted: &[String]) -> anyhow::Result<Vec<Group>> {
    if wanted.is_empty() {
        return Ok(known.to_vec());
    }
    wanted
        .iter()
        .map(|name| {
            known
                .iter()
                .find(|g| &g.name == name)
                .cloned()
                .ok_or_else(|| unknown_group(name, known))
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
pub(crate) struct Letter {
    pub(crate) id: DlqId,
    pub(crate) group: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
    pub(crate) timestamp: Option<DateTime<Utc>>,
}

impl Letter {
    pub(crate) fn new(group: &str, message: OwnedMessage) -> Self {
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
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Written through the outbox by a handler, rather than by the consumer runtime.
    pub(crate) fn through_outbox(&self) -> bool {
        self.header("consumer_group").is_none() && self.header("dead_lettered_at").is_none()
    }

    /// When it was dead-lettered: the runtime's `dead_lettered_at`, the
    /// outbox's `occurred_at`, else the Kafka timestamp.
    pub(crate) fn at(&self) -> Option<DateTime<Utc>> {
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
    pub(crate) fn redrive_count(&self) -> Result<u32, String> {
        match self.header(REDRIVE_COUNT) {
            None => Ok(0),
            Some(count) => count
                .trim()
                .parse()
                .map_err(|_| format!("its redrive_count header {count:?} is not a number")),
        }
    }

    pub(crate) fn matches(&self, filter: &Filter, kafka: &KafkaSettings) -> bool {
        if let Some(topic) = &filter.topic {
            let original = self.header("original_topic");
            if original != Some(topic) && original != Some(&kafka.topic(topic)) {
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

    pub(crate) fn listed(&self) -> Listed {
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
}
