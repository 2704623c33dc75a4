//! `tributary`: one binary, a role per subcommand.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use tributary::{App, Listeners, Role, Settings, bench, ctl, demo, simulate};
use tributary_platform::{config, shutdown::Shutdown, telemetry};

/// An event-driven shop on Kafka: commands, outbox relay, projections,
/// schema registry and queries, as one binary.
#[derive(Debug, Parser)]
#[command(name = "tributary", version)]
struct Cli {
    /// TOML settings file; `TRIBUTARY__SECTION__KEY` variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one role, or every role in one process (`all`).
    Run {
        /// The role to run.
        #[arg(value_enum)]
        role: Role,
    },
    /// Zero-setup demo: every role in-process, orders from a generator, read-model counts at the end.
    Demo(demo::DemoArgs),
    /// Measure throughput and latency; prints a table (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Play an upstream system: the payment provider or the warehouse.
    Simulate(simulate::SimulateArgs),
    /// Operator commands: projections, analysts' access.
    #[command(subcommand)]
    Ctl(ctl::CtlCommand),
    /// Create the database if missing and apply every migration.
    Migrate,
    /// Print the effective settings (secrets as ***).
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tributary_platform::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error.into()),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: Settings = config::load(cli.config.as_deref(), &config::process_env())?;
    match cli.command {
        Command::Run { role } => {
            telemetry::init_logs(&settings.telemetry);
            telemetry::metrics();
            // Every role drains within its own deadline; the longest, plus
            // time to store and commit what was drained.
            let grace = [
                settings.projector.drain_timeout,
                settings.process_manager.drain_timeout,
                settings.tasks.drain_timeout,
                settings.notifier.consumer.drain_timeout,
            ]
            .into_iter()
            .max()
            .unwrap_or_default()
                + Duration::from_secs(5);
            let app = App::connect(settings, role == Role::All).await?;
            let mut shutdown = Shutdown::new();
            app.spawn(role, Listeners::default(), &mut shutdown).await?;
            shutdown.run(grace).await
        }
        Command::Demo(args) => demo::run(settings, args).await,
        Command::Bench(args) => bench::run(settings, args).await,
        Command::Simulate(args) => {
            telemetry::init_logs(&settings.telemetry);
            let app = App::connect(settings, false).await?;
            app.ensure_topics().await?;
            let token = tokio_util::sync::CancellationToken::new();
            let stop = token.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                stop.cancel();
            });
            let published = simulate::run(&app, &args, token).await?;
            println!("published {published} events");
            Ok(())
        }
        Command::Ctl(command) => ctl::run(settings, command).await,
        Command::Migrate => {
            telemetry::init_logs(&settings.telemetry);
            tributary_platform::db::connect(&settings.database, &tributary::app::MIGRATORS).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Config => {
            println!("{}", serde_json::to_string_pretty(&settings)?);
            Ok(())
        }
    }
}
