//! `tributary ctl`: the operator CLI. Every command prints a readable
//! summary, or JSON with `--json`; a failure is one line on stderr and a
//! non-zero exit.

pub mod analyst;
pub mod dlq;
pub mod projection;
pub mod task;
pub mod webhook;

use clap::Subcommand;

use crate::Settings;

/// Operator commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Projections: their state, and rebuilds.
    #[command(subcommand)]
    Projection(projection::ProjectionCommand),
    /// Analysts' read-only PostgreSQL role: grant and revoke.
    #[command(subcommand)]
    Analyst(analyst::AnalystCommand),
    /// Dead letters: list, show, redrive.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Tasks: enqueue, show, list.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Webhook subscriptions: add, list, show, remove.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
}

/// Runs an operator command.
pub async fn run(settings: Settings, command: CtlCommand) -> anyhow::Result<()> {
    match command {
        CtlCommand::Projection(command) => projection::run(settings, command).await,
        CtlCommand::Analyst(command) => analyst::run(settings, command).await,
        CtlCommand::Dlq(command) => dlq::run(settings, command).await,
        CtlCommand::Task(command) => task::run(settings, command).await,
        CtlCommand::Webhook(command) => webhook::run(settings, command).await,
    }
}
