//! `tributary ctl projection rebuild NAME`: replay a projection from the
//! earliest offset into fresh tables while the current ones keep serving,
//! then swap them in atomically: argument parsing and printing over
//! `tributary_projector::rebuild::rebuild`.

use clap::Subcommand;
use tributary_projector::rebuild;

use crate::{App, Settings};

/// Projection commands.
#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Replay a projection from the earliest offset into fresh tables while
    /// the current ones keep serving, then swap them in atomically.
    Rebuild {
        /// The projection to rebuild (`orders`).
        name: String,
        /// Print progress and the outcome as JSON lines on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a projection command.
pub async fn run(settings: Settings, command: ProjectionCommand) -> anyhow::Result<()> {
    match command {
        ProjectionCommand::Rebuild { name, json } => {
            let app = App::connect(settings, false).await?;
            let deployment = app.rebuild_deployment().await?;
            let outcome = rebuild::rebuild(&deployment, &name, |progress| {
                if json {
                    println!("{}", serde_json::to_string(progress).unwrap_or_default());
                } else {
                    eprintln!(
                        "rebuilding {name}: {} / {} messages ({:.1}%), {:.0} messages/s",
                        progress.applied,
                        progress.target,
                        progress.percent(),
                        progress.rate
                    );
                }
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&outcome)?);
            } else {
                println!(
                    "rebuilt {name}: {} messages replayed in {:.1} s and swapped in (rebuild {})",
                    outcome.applied, outcome.seconds, outcome.rebuild_id
                );
            }
            Ok(())
        }
    }
}
