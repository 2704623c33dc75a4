//! `tributary ctl dlq list|show|redrive`: the operators' dead-letter tool,
//! argument parsing and printing over the consumer runtime's
//! [`DeadLetterAdmin`] (`tributary_consumer::dead_letter`).
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

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand, value_parser};
use tributary_consumer::dead_letter::{
    DeadLetterAdmin, DlqId, Filter, Listed, Redrive, RedriveSummary, Redriven, Shown, select_groups,
};

use crate::{App, Settings, app::dead_letter_groups};

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

/// Runs a dead-letter command.
pub async fn run(settings: Settings, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List {
            groups,
            filter,
            json,
        } => {
            // Refuse an unknown group before connecting to anything.
            select_groups(&dead_letter_groups(&settings), &groups)?;
            let app = App::connect(settings, false).await?;
            let listed = app
                .dead_letter_admin()?
                .list(&filter.into_filter(groups))
                .await?;
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
            let shown = app.dead_letter_admin()?.show(&id).await?;
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
            select_groups(&dead_letter_groups(&settings), std::slice::from_ref(&group))?;
            let app = App::connect(settings, false).await?;
            let options = Redrive {
                group: group.clone(),
                filter: filter.into_filter(Vec::new()),
                rate,
                max_redrives,
                dry_run,
            };
            let admin: DeadLetterAdmin = app.dead_letter_admin()?;
            let summary = admin.redrive(
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
