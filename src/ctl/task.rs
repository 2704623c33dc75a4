//! `tributary ctl task enqueue|show|list`: tasks from the command line.

use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::json;
use tributary_tasks::{
    Enqueue, Priority,
    results::{self, Filter, State, TaskRow},
};
use uuid::Uuid;

use crate::{App, Settings};

/// Task commands.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Enqueue a task (through the outbox: it is published by the relay).
    Enqueue {
        /// The task's name (`tributary.noop`).
        name: String,
        /// Its arguments as JSON fitting its Avro record.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Its queue: high, default or low.
        #[arg(long, default_value = "default")]
        priority: Priority,
        /// Not before this long from now (`30s`, `5m`).
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "eta")]
        countdown: Option<Duration>,
        /// Not before this time (RFC 3339).
        #[arg(long)]
        eta: Option<DateTime<Utc>>,
        /// Attempts in all (default: `tasks.max_attempts`).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Per attempt (default: `tasks.time_limit`).
        #[arg(long, value_parser = humantime::parse_duration)]
        time_limit: Option<Duration>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one task: state, attempts, timings, result or error.
    Show {
        /// The task's id.
        task_id: Uuid,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The periodic tasks: their pattern, next tick and last firing.
    Schedules {
        /// Print them as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// List tasks, newest first.
    List {
        /// Only in this state (pending, running, retrying, succeeded, failed, dead).
        #[arg(long)]
        state: Option<State>,
        /// Only of this task.
        #[arg(long)]
        task: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print them as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a task command.
pub async fn run(settings: Settings, command: TaskCommand) -> anyhow::Result<()> {
    let app = App::connect(settings, false).await?;
    match command {
        TaskCommand::Enqueue {
            name,
            args,
            priority,
            countdown,
            eta,
            max_attempts,
            time_limit,
            json,
        } => {
            let enqueuer = app.enqueuer().await?;
            let mut request = Enqueue::json(enqueuer.catalog(), &name, args.as_bytes())
                .map_err(|error| anyhow::anyhow!("{error}"))?
                .priority(priority);
            if let Some(countdown) = countdown {
                request = request.countdown(countdown);
            }
            if let Some(eta) = eta {
                request = request.eta(eta);
            }
            request.max_attempts = max_attempts;
            request.time_limit = time_limit;
            let task_id = enqueuer
                .enqueue(&app.pool, &request)
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            if json {
                println!(
                    "{}",
                    json!({"task_id": task_id, "task": name, "priority": priority,
                           "state": "pending", "due_at": request.due_at})
                );
            } else {
                let due = request
                    .due_at
                    .map(|at| format!(", due {}", at.to_rfc3339()))
                    .unwrap_or_default();
                println!("enqueued {name} as {task_id} on tasks.{priority}{due}");
            }
        }
        TaskCommand::Schedules { json } => {
            let rows = tributary_scheduler::list(&app.pool).await?;
            if json {
                for row in &rows {
                    println!("{}", serde_json::to_string(row)?);
                }
            } else {
                println!(
                    "{:<24}  {:<24}  {:<16}  {:<25}  {:<25}",
                    "schedule", "task", "cron", "next tick", "last tick"
                );
                for row in &rows {
                    println!(
                        "{:<24}  {:<24}  {:<16}  {:<25}  {:<25}",
                        row.name,
                        row.task,
                        row.cron,
                        row.next_fire_at.to_rfc3339(),
                        row.last_tick.map_or("-".to_owned(), |t| t.to_rfc3339()),
                    );
                }
            }
        }
        TaskCommand::Show { task_id, json } => {
            let Some(row) = results::get(&app.pool, task_id).await? else {
                bail!("no task {task_id}");
            };
            if json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                print_row(&row);
            }
        }
        TaskCommand::List {
            state,
            task,
            limit,
            json,
        } => {
            if !(1..=10_000).contains(&limit) {
                bail!("--limit must be between 1 and 10000");
            }
            let rows = results::list(
                &app.pool,
                &Filter {
                    state,
                    name: task,
                    before: None,
                    limit,
                },
            )
            .await?;
            if json {
                for row in &rows {
                    println!("{}", serde_json::to_string(row)?);
                }
            } else {
                println!(
                    "{:<36}  {:<24}  {:<7}  {:<9}  {:>8}  {:<24}",
                    "task id", "task", "queue", "state", "attempts", "enqueued at"
                );
                for row in &rows {
                    println!(
                        "{:<36}  {:<24}  {:<7}  {:<9}  {:>8}  {:<24}",
                        row.task_id,
                        row.name,
                        row.priority,
                        row.state,
                        format!("{}/{}", row.attempts, row.max_attempts),
                        row.enqueued_at.to_rfc3339(),
                    );
                }
                eprintln!("{} task(s)", rows.len());
            }
        }
    }
    Ok(())
}

fn print_row(row: &TaskRow) {
    let time = |at: Option<DateTime<Utc>>| at.map_or("-".to_owned(), |at| at.to_rfc3339());
    println!("task      {}", row.task_id);
    println!("name      {}", row.name);
    println!("queue     tasks.{}", row.priority);
    println!("state     {}", row.state);
    println!("attempts  {} of {}", row.attempts, row.max_attempts);
    println!("enqueued  {}", row.enqueued_at.to_rfc3339());
    println!("due       {}", time(row.due_at));
    println!("started   {}", time(row.started_at));
    println!("finished  {}", time(row.finished_at));
    if let Some(result) = &row.result {
        println!("result    {result}");
    }
    if let Some(error) = &row.error {
        println!("error     {error}");
    }
}
