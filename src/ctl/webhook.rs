//! `tributary ctl webhook add|list|show|remove`: webhook subscriptions.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use tributary_notifier::subscriptions::{self, NewSubscription, Subscription};
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
            let secret = secret_file
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))
                        .map(|s| s.trim().to_owned())
                })
                .transpose()?;
            let new = NewSubscription {
                url,
                event_types,
                secret,
                description,
            };
            new.validate(settings.notifier.webhooks.allow_private_targets)
                .map_err(|e| {
                    let flag = match e.field.split('[').next() {
                        Some("event_types") => "--event-type".to_owned(),
                        Some("secret") => "--secret-file".to_owned(),
                        Some("url") => "url".to_owned(),
                        _ => format!("--{}", e.field),
                    };
                    anyhow::anyhow!("{flag}: {}", e.message)
                })?;
            let (subscription, secret) = subscriptions::create(&pool, &new).await?;
            if json {
                let mut value = serde_json::to_value(&subscription)?;
                value["secret"] = secret.into();
                println!("{value}");
            } else {
                print(&subscription);
                println!("secret       {secret}");
                eprintln!("keep the secret: it is not shown again");
            }
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

fn print(s: &Subscription) {
    println!("subscription {}", s.subscription_id);
    println!("url          {}", s.url);
    println!("event types  {}", s.event_types.join(", "));
    if !s.description.is_empty() {
        println!("description  {}", s.description);
    }
    println!("created      {}", s.created_at.to_rfc3339());
}
