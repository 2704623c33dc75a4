//! E-mails: rendered from templates, sent over SMTP, once per idempotency key.
//!
//! A template (`templates/<name>.txt`, MiniJinja) renders the plain-text
//! body and sets `subject`. Its context is the JSON the enqueuer gave; the
//! filter `money(currency)` formats minor units (`1999|money("EUR")` is
//! `19.99 EUR`).

use std::{str::FromStr, sync::Arc};

use anyhow::{Context, anyhow};
use apache_avro::AvroSchema;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tributary_tasks::{Task, TaskContext, TaskError};
use uuid::Uuid;

use crate::EmailSettings;

/// The customer's confirmation of an order placed.
pub const ORDER_CONFIRMATION: &str = "order_confirmation";
/// The customer's notice that an order shipped.
pub const ORDER_SHIPPED: &str = "order_shipped";
/// The customer's reminder of orders left unpaid.
pub const UNPAID_REMINDER: &str = "unpaid_reminder";
/// The daily sales report.
pub const DAILY_REPORT: &str = "daily_report";

/// Every template, by name.
const TEMPLATES: [(&str, &str); 4] = [
    (
        ORDER_CONFIRMATION,
        include_str!("../templates/order_confirmation.txt"),
    ),
    (
        ORDER_SHIPPED,
        include_str!("../templates/order_shipped.txt"),
    ),
    (
        UNPAID_REMINDER,
        include_str!("../templates/unpaid_reminder.txt"),
    ),
    (DAILY_REPORT, include_str!("../templates/daily_report.txt")),
];

/// The e-mail templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters"),
        );
        env.add_filter("money", money);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .expect("the shipped templates parse");
        }
        Self { env }
    }
}

/// A rendered e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

impl Templates {
    /// Renders `template` with `context`.
    pub fn render(&self, template: &str, context: &serde_json::Value) -> anyhow::Result<Rendered> {
        let template = self
            .env
            .get_template(template)
            .map_err(|_| anyhow!("no e-mail template {template:?}"))?;
        let captured = template
            .render_captured(minijinja::Value::from(minijinja::value::Serde(context)))
            .map_err(|e| anyhow!("rendering {}: {e:#}", template.name()))?;
        let subject = captured
            .state()
            .lookup("subject")
            .and_then(|s| s.as_str().map(str::to_owned))
            .ok_or_else(|| anyhow!("template {} sets no subject", template.name()))?;
        Ok(Rendered {
            subject,
            body: captured.output().trim().to_owned() + "\n",
        })
    }
}

/// `minor|money(currency)`: minor units as a decimal amount and the code.
fn money(minor: i64, currency: String) -> String {
    let exponent = iso_currency::Currency::from_code(&currency)
        .and_then(|c| c.exponent())
        .unwrap_or(2) as u32;
    if exponent == 0 {
        return format!("{minor} {currency}");
    }
    let scale = 10_i64.pow(exponent);
    let sign = if minor < 0 { "-" } else { "" };
    let (whole, part) = (minor.abs() / scale, minor.abs() % scale);
    format!(
        "{sign}{whole}.{part:0width$} {currency}",
        width = exponent as usize
    )
}

/// What an e-mail task is given: a template, its context and the recipient
/// (an address, or a customer whose address the notifier knows; their
/// `name` joins the context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "tributary.notifier")]
pub struct EmailArgs {
    pub template: String,
    pub to_address: Option<String>,
    pub to_customer: Option<String>,
    /// The idempotency key: the same e-mail is not sent twice to one address.
    pub key: String,
    /// The template's context, a JSON object.
    pub context: String,
}

/// An SMTP client, its sender and the templates.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    templates: Templates,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The mailer of `settings`; `None` when no SMTP server is configured.
    pub fn new(settings: &EmailSettings) -> anyhow::Result<Option<Self>> {
        let Some(url) = &settings.smtp_url else {
            return Ok(None);
        };
        tributary_platform::tls::install_crypto_provider();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .context("notifier.email.smtp_url")?
            .timeout(Some(settings.timeout))
            .build();
        let from = Mailbox::from_str(&settings.from)
            .with_context(|| format!("notifier.email.from: {:?}", settings.from))?;
        for to in &settings.reports_to {
            Mailbox::from_str(to).with_context(|| format!("notifier.email.reports_to: {to:?}"))?;
        }
        Ok(Some(Self {
            transport,
            from,
            templates: Templates::default(),
        }))
    }
}

/// The task that sends one e-mail.
#[derive(Debug, Clone)]
pub struct SendEmail {
    pool: PgPool,
    mailer: Option<Arc<Mailer>>,
}

impl SendEmail {
    /// Sends with `mailer` (`None`: every e-mail fails, saying SMTP is not configured).
    pub fn new(pool: PgPool, mailer: Option<Mailer>) -> Self {
        Self {
            pool,
            mailer: mailer.map(Arc::new),
        }
    }
}

impl Task for SendEmail {
    const NAME: &'static str = "notifier.email";
    type Args = EmailArgs;

    async fn run(&self, ctx: TaskContext, args: EmailArgs) -> Result<serde_json::Value, TaskError> {
        let permanent = |e: anyhow::Error| TaskError::Permanent(e);
        let mailer = self.mailer.as_ref().ok_or_else(|| {
            permanent(anyhow!(
                "no SMTP server is configured (notifier.email.smtp_url)"
            ))
        })?;
        let mut context: serde_json::Value =
            serde_json::from_str(&args.context).map_err(|e| permanent(anyhow!("context: {e}")))?;
        let to = match (&args.to_address, &args.to_customer) {
            (Some(address), _) => address.clone(),
            (None, Some(customer)) => {
                let customer = Uuid::parse_str(customer)
                    .map_err(|e| permanent(anyhow!("to_customer: {e}")))?;
                let address: Option<(String, String)> = sqlx::query!(
                    "SELECT email, name FROM notifier.recipients WHERE customer_id = $1",
                    customer
                )
                .fetch_optional(&self.pool)
                .await
                .context("reading the recipient")?
                .map(|r| (r.email, r.name));
                // The customer's registration travels on another topic and
                // may not have been read yet: retry.
                let (email, name) = address.ok_or_else(|| {
                    TaskError::Retry(anyhow!("customer {customer}'s address is not known yet"))
                })?;
                if let Some(context) = context.as_object_mut() {
                    context.entry("name").or_insert(json!(name));
                }
                format!("{name} <{email}>")
            }
            (None, None) => return Err(permanent(anyhow!("the e-mail names no recipient"))),
        };
        let to = Mailbox::from_str(&to).map_err(|e| permanent(anyhow!("to {to:?}: {e}")))?;
        let target = to.email.to_string();
        let dedupe_key = format!("{}:{}", args.template, args.key);
        if crate::deliveries::delivered(&self.pool, "email", &target, &dedupe_key).await? {
            return Ok(json!({"already_sent": true}));
        }
        let rendered = mailer
            .templates
            .render(&args.template, &context)
            .map_err(permanent)?;
        let message = Message::builder()
            .from(mailer.from.clone())
            .to(to)
            .subject(&rendered.subject)
            .message_id(Some(format!("<{}@tributary>", ctx.task_id)))
            .header(ContentType::TEXT_PLAIN)
            .body(rendered.body)
            .map_err(|e| permanent(anyhow!("building the message: {e}")))?;
        mailer
            .transport
            .send(message)
            .await
            .map_err(|e| match e.is_permanent() {
                true => permanent(anyhow!("SMTP: {e}")),
                false => TaskError::Retry(anyhow!("SMTP: {e}")),
            })?;
        crate::deliveries::record_delivery(
            &self.pool,
            "email",
            &target,
            &dedupe_key,
            ctx.attempt,
            None,
        )
        .await?;
        Ok(json!({"to": target, "subject": rendered.subject}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_uses_the_currency_exponent() {
        assert_eq!(money(1999, "EUR".into()), "19.99 EUR");
        assert_eq!(money(5, "USD".into()), "0.05 USD");
        assert_eq!(money(-250, "EUR".into()), "-2.50 EUR");
        assert_eq!(money(1500, "JPY".into()), "1500 JPY");
    }

    #[test]
    fn every_template_renders_with_a_subject() {
        let templates = Templates::default();
        let confirmation = templates
            .render(
                ORDER_CONFIRMATION,
                &json!({"order_id": "o-1", "currency": "EUR", "total_minor": 2598,
                        "lines": [{"sku": "TEA-1", "quantity": 2, "unit_price_minor": 1299}]}),
            )
            .unwrap();
        assert_eq!(confirmation.subject, "Your order o-1 is confirmed");
        assert!(
            confirmation.body.contains("2 x TEA-1 at 12.99 EUR"),
            "{}",
            confirmation.body
        );
        assert!(
            confirmation.body.contains("Total: 25.98 EUR"),
            "{}",
            confirmation.body
        );
        let shipped = templates
            .render(
                ORDER_SHIPPED,
                &json!({"order_id": "o-1", "carrier": "DHL", "shipment_id": "s-9"}),
            )
            .unwrap();
        assert!(shipped.subject.contains("shipped"));
        assert!(shipped.body.contains("DHL"));
        let reminder = templates
            .render(
                UNPAID_REMINDER,
                &json!({"name": "Ada", "orders": [{"order_id": "o-1", "total_minor": 100,
                         "currency": "EUR", "placed_at": "2026-11-20T10:00:00Z"}]}),
            )
            .unwrap();
        assert!(reminder.body.contains("o-1"));
        let report = templates
            .render(
                DAILY_REPORT,
                &json!({"day": "2026-11-23", "rows": [{"currency": "EUR", "orders": 3,
                         "gross_minor": 5000, "refunds": 1, "refunded_minor": 500, "net_minor": 4500}]}),
            )
            .unwrap();
        assert_eq!(report.subject, "Sales report for 2026-11-23");
        assert!(report.body.contains("45.00 EUR"), "{}", report.body);
        let missing = templates.render(ORDER_SHIPPED, &json!({"order_id": "o-1"}));
        assert!(missing.is_err(), "a missing variable fails the rendering");
        assert!(templates.render("nope", &json!({})).is_err());
    }
}
