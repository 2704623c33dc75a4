//! `tributary ctl analyst`: a read-only PostgreSQL role for analysts,
//! argument parsing and printing over `tributary_projector::analysts`
//! (the crate that owns `read_model`).
//!
//! `grant` gives a role exactly CONNECT on the database, USAGE on the schema
//! `read_model`, SELECT on its tables and views, and SELECT on the tables
//! created there later (default privileges); `revoke` takes that back and
//! leaves the role. The role name is checked ([`AnalystRole::parse`])
//! and, besides, only ever reaches SQL as a bound parameter that the server
//! quotes with `format('%I')`: the statements themselves are constants.

use anyhow::bail;
use clap::Subcommand;
use sqlx::PgPool;
use tributary_platform::Secret;
use tributary_projector::analysts::{self, AnalystRole};

use crate::Settings;

/// The environment variable `grant --login` reads the password from.
pub const PASSWORD_VARIABLE: &str = "TRIBUTARY_ANALYST_PASSWORD";

/// Analyst access commands.
#[derive(Debug, Subcommand)]
pub enum AnalystCommand {
    /// Create ROLE if missing (NOLOGIN unless --login) and grant it read-only
    /// access to the read models: CONNECT, USAGE on schema read_model, SELECT
    /// on its tables and views, now and later. Running it again is harmless.
    Grant {
        /// The role: lower-case letters, digits and `_`, not starting with a
        /// digit, at most 63 characters.
        role: String,
        /// Give the role LOGIN, with the password in the environment variable
        /// TRIBUTARY_ANALYST_PASSWORD (never on the command line).
        #[arg(long)]
        login: bool,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Revoke what `grant` gave ROLE; the role itself stays.
    Revoke {
        /// The role.
        role: String,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an analyst command.
pub async fn run(settings: Settings, command: AnalystCommand) -> anyhow::Result<()> {
    match command {
        AnalystCommand::Grant { role, login, json } => {
            let role = AnalystRole::parse(&role)?;
            let password = if login {
                match std::env::var(PASSWORD_VARIABLE) {
                    Ok(password) if !password.is_empty() => Some(Secret::new(password)),
                    _ => bail!(
                        "--login needs the password in the environment variable {PASSWORD_VARIABLE}"
                    ),
                }
            } else {
                None
            };
            let granted =
                analysts::grant_role(&connect(&settings).await?, &role, password.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string(&granted)?);
            } else {
                print!("{granted}");
            }
            Ok(())
        }
        AnalystCommand::Revoke { role, json } => {
            let role = AnalystRole::parse(&role)?;
            let revoked = analysts::revoke_role(&connect(&settings).await?, &role).await?;
            if json {
                println!("{}", serde_json::to_string(&revoked)?);
            } else {
                print!("{revoked}");
            }
            Ok(())
        }
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    tributary_platform::db::connect(&settings.database, &crate::app::MIGRATORS).await
}
