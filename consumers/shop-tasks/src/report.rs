//! The daily sales report, e-mailed.

use anyhow::{Context, anyhow};
use apache_avro::AvroSchema;
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tributary_notifier::email::{self, EmailArgs, SendEmail};
use tributary_tasks::{Task, TaskContext, TaskError};

/// Which day to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.tasks")]
pub struct DailyReportArgs {
    /// `YYYY-MM-DD` (UTC); yesterday when absent.
    pub day: Option<String>,
}

/// Reads a day's sales from `read_model.daily_sales` and e-mails them.
#[derive(Debug, Clone)]
pub struct DailyReport {
    pool: PgPool,
    email: SendEmail,
    reports_to: Vec<String>,
}

impl DailyReport {
    /// Reports e-mailed through `email` to `reports_to`.
    pub fn new(pool: PgPool, email: SendEmail, reports_to: Vec<String>) -> Self {
        Self {
            pool,
            email,
            reports_to,
        }
    }
}

impl Task for DailyReport {
    const NAME: &'static str = "shop.daily_report";
    type Args = DailyReportArgs;

    async fn run(
        &self,
        ctx: TaskContext,
        args: DailyReportArgs,
    ) -> Result<serde_json::Value, TaskError> {
        let day = match &args.day {
            Some(day) => NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .map_err(|e| TaskError::Permanent(anyhow!("day {day:?}: {e}")))?,
            None => Utc::now()
                .date_naive()
                .pred_opt()
                .expect("a day before today"),
        };
        let rows: Vec<(String, i32, i64, i32, i64, i64)> = sqlx::query!(
            r#"SELECT currency::text AS "currency!", orders, gross_minor, refunds, refunded_minor,
                      net_minor AS "net_minor!"
               FROM read_model.daily_sales WHERE day = $1 ORDER BY currency"#,
            day
        )
        .fetch_all(&self.pool)
        .await
        .context("reading the day's sales")?
        .into_iter()
        .map(|r| {
            (
                r.currency,
                r.orders,
                r.gross_minor,
                r.refunds,
                r.refunded_minor,
                r.net_minor,
            )
        })
        .collect();
        let rows: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|(currency, orders, gross_minor, refunds, refunded_minor, net_minor)| {
                json!({
                    "currency": currency, "orders": orders, "gross_minor": gross_minor,
                    "refunds": refunds, "refunded_minor": refunded_minor, "net_minor": net_minor,
                })
            })
            .collect();
        let day = day.to_string();
        if self.reports_to.is_empty() {
            tracing::warn!(
                day,
                "notifier.email.reports_to is empty: the sales report goes nowhere"
            );
        }
        let context = json!({"day": day, "rows": rows}).to_string();
        for to in &self.reports_to {
            self.email
                .run(
                    ctx.clone(),
                    EmailArgs {
                        template: email::DAILY_REPORT.to_owned(),
                        to_address: Some(to.clone()),
                        to_customer: None,
                        key: format!("daily_report:{day}"),
                        context: context.clone(),
                    },
                )
                .await?;
        }
        Ok(json!({"day": day, "rows": rows, "emailed": self.reports_to}))
    }
}
