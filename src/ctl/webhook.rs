//! `tributary ctl webhook add|list|show|remove`: webhook subscriptions.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use tributary_notifier::subscriptions::{self, NewSubscription, Rotation, Subscription};
use uuid::Uuid;

use crate::{Settings, app::MIGRATORS};

/// Webhook subscription commands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a URL to event types; prints the signing secret once.
    Add {
        /// Where deliveries are POSTed.
        url: String,
        /// An event type (`shop.orders.OrderPaid`) or `*` (repeatable).
        #[arg(long = "event-type", value_name = "TYPE", required = true)]
        event_types: Vec<String>,
        /// A file holding the signing secret (16 to 256 characters); one is
        /// generated when absent. Never on the command line.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// What the subscription is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every subscription.
    List {
        /// Print them as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// One subscription.
    Show {
        subscription_id: Uuid,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a subscription; its deliveries still queued are dropped.
    Remove { subscription_id: Uuid },
    /// Give a subscription a new secret; prints it once. The old secret signs
    /// beside it for `--overlap`, so receivers can switch without refusals.
    Rotate {
        subscription_id: Uuid,
        /// A file holding the new secret (16 to 256 characters); one is
        /// generated when absent.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// How long the old secret signs on (`0s` retires it at once; at most 7 days).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a webhook command.
pub async fn run(settings: Settings, command: WebhookCommand) -> anyhow::Result<()> {
    let pool = tributary_platform::db::connect(&settings.database, &MIGRATORS).await?;
    match command {
        WebhookCommand::Add {
            url,
            event_types,
            secret_file,
            description,
            json,
        } => {
            let secret = read_secret(secret_file)?;
            let new = NewSubscription {
                url,
                event_types,
                secret,
                description,
            };
            new.validate(settings.notifier.webhooks.allow_private_targets)
                .map_err(refusal)?;
            let (subscription, secret) = subscriptions::create(&pool, &new).await?;
            print_with_secret(&subscription, &secret, json)?;
        }
        WebhookCommand::Rotate {
            subscription_id,
            secret_file,
            overlap,
            json,
        } => {
            let rotation = Rotation {
                secret: read_secret(secret_file)?,
                overlap_seconds: Some(u32::try_from(overlap.as_secs()).unwrap_or(u32::MAX)),
            };
            rotation.validate().map_err(refusal)?;
            let Some((subscription, secret)) =
                subscriptions::rotate(&pool, subscription_id, &rotation).await?
            else {
                bail!("no subscription {subscription_id}");
            };
            print_with_secret(&subscription, &secret, json)?;
        }
        WebhookCommand::List { json } => {
            let all = subscriptions::list(&pool).await?;
            if json {
                for subscription in &all {
                    println!("{}", serde_json::to_string(subscription)?);
                }
            } else {
                println!("{:<36}  {:<40}  event types", "subscription", "url");
                for s in &all {
                    println!(
                        "{:<36}  {:<40}  {}",
                        s.subscription_id,
                        s.url,
                        s.event_types.join(",")
                    );
                }
                eprintln!("{} subscription(s)", all.len());
            }
        }
        WebhookCommand::Show {
            subscription_id,
            json,
        } => {
            let Some(subscription) = subscriptions::get(&pool, subscription_id).await? else {
                bail!("no subscription {subscription_id}");
            };
            if json {
                println!("{}", serde_json::to_string(&subscription)?);
            } else {
                print(&subscription);
            }
        }
        WebhookCommand::Remove { subscription_id } => {
            if !subscriptions::delete(&pool, subscription_id).await? {
                bail!("no subscription {subscription_id}");
            }
            println!("removed {subscription_id}");
        }
    }
    Ok(())
}

/// The secret in `path`, trimmed; `None` without a file.
fn read_secret(path: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    path.map(|path| {
        std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))
            .map(|s| s.trim().to_owned())
    })
    .transpose()
}

/// A refused field, named as the command line spells it.
fn refusal(e: subscriptions::Invalid) -> anyhow::Error {
    let flag = match e.field.split('[').next() {
        Some("event_types") => "--event-type".to_owned(),
        Some("secret") => "--secret-file".to_owned(),
        Some("overlap_seconds") => "--overlap".to_owned(),
        Some("url") => "url".to_owned(),
        _ => format!("--{}", e.field),
    };
    anyhow::anyhow!("{flag}: {}", e.message)
}

/// A subscription with its secret, which is not shown again.
fn print_with_secret(subscription: &Subscription, secret: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let mut value = serde_json::to_value(subscription)?;
        value["secret"] = secret.into();
        println!("{value}");
    } else {
        print(subscription);
        println!("secret       {secret}");
        eprintln!("keep the secret: it is not shown again");
    }
    Ok(())
}

fn print(s: &Subscription) {
    println!("subscription {}", s.subscription_id);
    println!("url          {}", s.url);
    println!("event types  {}", s.event_types.join(", "));
    if !s.description.is_empty() {
        println!("description  {}", s.description);
    }
    println!("created      {}", s.created_at.to_rfc3339());
    if let Some(rotated) = s.secret_rotated_at {
        println!("rotated      {}", rotated.to_rfc3339());
    }
    if let Some(until) = s.previous_secret_expires_at {
        println!("old secret   signs until {}", until.to_rfc3339());
    }
}
