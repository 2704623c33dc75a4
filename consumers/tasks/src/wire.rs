//! What a task message looks like on Kafka.
//!
//! - Topic: `tasks.<priority>`, or a delay topic `<group>.retry.<delay>`
//!   while it waits for a countdown, an ETA or a retry.
//! - Key: the task id (tasks spread over partitions; one task's attempts
//!   stay on one partition of each topic).
//! - Value: the arguments, Avro, Confluent-framed.
//! - Headers: [`TaskHeaders`], plus `event_id` (UUIDv7, one per message),
//!   `producer` and, when known, `correlation_id` and `causation_id`.

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A task queue. Workers drain `high` first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// `tasks.high`
    High,
    /// `tasks.default`
    #[default]
    Default,
    /// `tasks.low`
    Low,
}

impl Priority {
    /// Highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Default, Priority::Low];

    /// `high`, `default` or `low`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Default => "default",
            Priority::Low => "low",
        }
    }

    /// The queue's topic, before any deployment prefix.
    pub fn topic(self) -> String {
        format!("tasks.{}", self.as_str())
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a priority (high, default or low)"))
    }
}

/// The delay topics' delays, shortest first. A message waits in the topic
/// of the longest delay not above its remaining wait (so a topic's messages
/// come due in about the order they arrive), and hops to a shorter one when
/// its wait is longer than the longest delay.
pub const DELAYS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(3600),
];

/// `1s`, `10s`, `1m`, `10m`, `1h`.
pub fn delay_name(delay: Duration) -> String {
    match delay.as_secs() {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The delay topic of `delay` for `group` (before any deployment prefix).
pub fn delay_topic(group: &str, delay: Duration) -> String {
    format!("{group}.retry.{}", delay_name(delay))
}

/// The delay a message due in `remaining` waits in: the longest not above it
/// (the shortest for a wait under a second).
pub fn delay_for(remaining: Duration) -> Duration {
    DELAYS
        .into_iter()
        .rev()
        .find(|delay| *delay <= remaining)
        .unwrap_or(DELAYS[0])
}

/// Most attempts a task may have.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest time limit of one attempt.
pub const MAX_TIME_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Furthest ahead a countdown or an ETA may be.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);

/// A task message's own headers.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskHeaders {
    /// The task's id: the same for every attempt.
    pub task_id: Uuid,
    /// The task's name in the [`Catalog`](crate::Catalog).
    pub task: String,
    /// Its queue.
    pub priority: Priority,
    /// Which attempt this message is (1 for the first).
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub time_limit: Duration,
    /// When it was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// Not before: set while the message waits in a delay topic.
    pub due_at: Option<DateTime<Utc>>,
    /// The chord this task is a member of.
    pub chord_id: Option<Uuid>,
    /// The chord whose callback this task is.
    pub callback_of: Option<Uuid>,
}

impl TaskHeaders {
    /// Header names, as on the wire.
    pub const NAMES: [&'static str; 10] = [
        "task_id",
        "task",
        "priority",
        "attempt",
        "max_attempts",
        "time_limit_ms",
        "enqueued_at",
        "due_at",
        "chord_id",
        "callback_of",
    ];

    /// The headers as name/value pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("task_id", self.task_id.to_string()),
            ("task", self.task.clone()),
            ("priority", self.priority.to_string()),
            ("attempt", self.attempt.to_string()),
            ("max_attempts", self.max_attempts.to_string()),
            ("time_limit_ms", self.time_limit.as_millis().to_string()),
            ("enqueued_at", timestamp(self.enqueued_at)),
        ];
        if let Some(due_at) = self.due_at {
            pairs.push(("due_at", timestamp(due_at)));
        }
        if let Some(chord_id) = self.chord_id {
            pairs.push(("chord_id", chord_id.to_string()));
        }
        if let Some(chord_id) = self.callback_of {
            pairs.push(("callback_of", chord_id.to_string()));
        }
        pairs
    }

    /// Reads the headers of a task message.
    pub fn read(message: &OwnedMessage) -> Result<Self, String> {
        let required =
            |name: &str| header(message, name).ok_or_else(|| format!("no `{name}` header"));
        let parse_err = |name: &str, e: &dyn fmt::Display| format!("header `{name}`: {e}");
        let time = |name: &str, value: &str| {
            DateTime::parse_from_rfc3339(value)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| parse_err(name, &e))
        };
        let task_id = required("task_id")?;
        let enqueued_at = required("enqueued_at")?;
        let headers = Self {
            task_id: task_id.parse().map_err(|e| parse_err("task_id", &e))?,
            task: required("task")?,
            priority: required("priority")?
                .parse()
                .map_err(|e| parse_err("priority", &e))?,
            attempt: required("attempt")?
                .parse()
                .map_err(|e| parse_err("attempt", &e))?,
            max_attempts: required("max_attempts")?
                .parse()
                .map_err(|e| parse_err("max_attempts", &e))?,
            time_limit: Duration::from_millis(
                required("time_limit_ms")?
                    .parse()
                    .map_err(|e| parse_err("time_limit_ms", &e))?,
            ),
            enqueued_at: time("enqueued_at", &enqueued_at)?,
            due_at: header(message, "due_at")
                .map(|value| time("due_at", &value))
                .transpose()?,
            chord_id: uuid(message, "chord_id")?,
            callback_of: uuid(message, "callback_of")?,
        };
        if !(1..=MAX_ATTEMPTS).contains(&headers.max_attempts) {
            return Err(format!(
                "header `max_attempts`: not between 1 and {MAX_ATTEMPTS}"
            ));
        }
        if !(1..=headers.max_attempts).contains(&headers.attempt) {
            return Err("header `attempt`: not between 1 and `max_attempts`".into());
        }
        if headers.time_limit.is_zero() || headers.time_limit > MAX_TIME_LIMIT {
            return Err("header `time_limit_ms`: not between 1 ms and 24 hours".into());
        }
        Ok(headers)
    }
}

/// An optional UUID header.
fn uuid(message: &OwnedMessage, name: &str) -> Result<Option<Uuid>, String> {
    header(message, name)
        .map(|value| value.parse().map_err(|e| format!("header `{name}`: {e}")))
        .transpose()
}

/// The wire form of a time: RFC 3339, UTC, milliseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A header's value as text.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Headers a message that moves on does not keep: set afresh (`event_id`,
/// `producer`), or true of one delivery only (`redriven_from`: the worker
/// reopens a redriven task's row once, not on its retries). `redrive_count`
/// is kept, for the redrive's loop guard.
const NOT_CARRIED: [&str; 3] = ["event_id", "producer", "redriven_from"];

/// The headers a message keeps when it moves on (a retry, a delay's end):
/// every header but the task's own, `event_id` and `producer`, which the
/// next message sets afresh.
pub fn carried(message: &OwnedMessage) -> Vec<(String, String)> {
    let Some(headers) = message.headers() else {
        return Vec::new();
    };
    headers
        .iter()
        .filter(|h| !TaskHeaders::NAMES.contains(&h.key) && !NOT_CARRIED.contains(&h.key))
        .filter_map(|h| {
            h.value
                .map(|v| (h.key.to_owned(), String::from_utf8_lossy(v).into_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_goes_to_the_longest_delay_not_above_it() {
        let s = Duration::from_secs;
        assert_eq!(delay_for(Duration::from_millis(300)), s(1));
        assert_eq!(delay_for(s(1)), s(1));
        assert_eq!(delay_for(s(9)), s(1));
        assert_eq!(delay_for(s(59)), s(10));
        assert_eq!(delay_for(s(60)), s(60));
        assert_eq!(delay_for(s(86_400)), s(3600));
        assert_eq!(delay_topic("g", s(600)), "g.retry.10m");
        assert_eq!(delay_topic("g", s(3600)), "g.retry.1h");
        assert_eq!(delay_topic("g", s(10)), "g.retry.10s");
    }

    #[test]
    fn priorities_parse_and_name_their_topics() {
        assert_eq!("high".parse::<Priority>(), Ok(Priority::High));
        assert!("urgent".parse::<Priority>().is_err());
        assert_eq!(Priority::Low.topic(), "tasks.low");
    }
}
